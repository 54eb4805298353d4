//! Datasets for population studies: samples in the MIRAGE format with a `category` field.
//! [`filings`] generates the shipped one.

pub mod csv;
pub mod filings;

use std::io::Write;
use std::path::Path;

use crate::prompt::Sample;
use crate::{Error, Result};

/// Writes `samples` as JSON Lines (one sample per line), through a temporary file and a rename so
/// a reader never sees half a file.
pub fn write_jsonl(path: &Path, samples: &[Sample]) -> Result<()> {
    let tmp = path.with_extension("jsonl.tmp");
    let mut out = Vec::new();
    for s in samples {
        serde_json::to_writer(&mut out, s)
            .map_err(|e| Error::Analysis(format!("cannot write a sample: {e}")))?;
        out.push(b'\n');
    }
    let mut file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    file.write_all(&out).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

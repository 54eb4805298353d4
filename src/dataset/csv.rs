//! Samples from a table of filings (`headscope dataset from-csv`): one row per filing, a column with
//! its text and one column per question category holding the answer. The text becomes documents of
//! whole paragraphs (about `chunk_chars` each); `gold` is the first document that contains the
//! answer. Rows whose answer is empty, or not found in the text, are skipped and counted.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::prompt::{Document, Sample};
use crate::{Error, Result};

/// One `--question CATEGORY=QUESTION=COLUMN`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuestionSpec {
    pub category: String,
    pub question: String,
    pub column: String,
}

impl std::str::FromStr for QuestionSpec {
    type Err = String;
    /// `CATEGORY=QUESTION=COLUMN`; the question may itself contain `=`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("write a question as CATEGORY=QUESTION=COLUMN, not `{s}`");
        let (category, rest) = s.split_once('=').ok_or_else(bad)?;
        let (question, column) = rest.rsplit_once('=').ok_or_else(bad)?;
        let (category, question, column) = (category.trim(), question.trim(), column.trim());
        if category.is_empty() || question.is_empty() || column.is_empty() {
            return Err(bad());
        }
        Ok(QuestionSpec {
            category: category.into(),
            question: question.into(),
            column: column.into(),
        })
    }
}

/// Parses CSV text (RFC 4180: quoted fields may hold commas, quotes as `""` and line breaks) into
/// rows of fields.
pub fn parse_csv(text: &str) -> Result<Vec<Vec<String>>> {
    let mut rows = Vec::new();
    let (mut row, mut field) = (Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut line = 1;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => {
                line += usize::from(c == '\n');
                field.push(c);
            }
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                line += 1;
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err(Error::Analysis(format!(
            "the CSV ends inside a quoted field (opened before line {line})"
        )));
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

/// Whole paragraphs of `text` gathered into documents of about `chunk_chars` characters.
pub fn chunk_documents(text: &str, chunk_chars: usize) -> Vec<Document> {
    let mut chunks: Vec<String> = Vec::new();
    for para in text.split('\n').map(str::trim).filter(|p| !p.is_empty()) {
        match chunks.last_mut() {
            Some(last) if last.len() + para.len() < chunk_chars => {
                last.push(' ');
                last.push_str(para);
            }
            _ => chunks.push(para.to_string()),
        }
    }
    let n = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| Document::new(format!("Part {} of {n}", i + 1), c))
        .collect()
}

/// What [`samples_from_table`] skipped, per category.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Skipped {
    pub empty: BTreeMap<String, usize>,
    pub not_in_text: BTreeMap<String, usize>,
}

/// The samples of a parsed table (first row: the header).
pub fn samples_from_table(
    rows: &[Vec<String>],
    text_column: &str,
    id_column: Option<&str>,
    questions: &[QuestionSpec],
    chunk_chars: usize,
) -> Result<(Vec<Sample>, Skipped)> {
    let (header, body) = rows
        .split_first()
        .ok_or_else(|| Error::Analysis("the CSV is empty".into()))?;
    let col = |name: &str| {
        header.iter().position(|h| h.trim() == name).ok_or_else(|| {
            Error::Analysis(format!(
                "no column `{name}` (the header has: {})",
                header.join(", ")
            ))
        })
    };
    let text_col = col(text_column)?;
    let id_col = id_column.map(col).transpose()?;
    let answer_cols = questions
        .iter()
        .map(|q| col(&q.column))
        .collect::<Result<Vec<_>>>()?;
    let (mut samples, mut skipped) = (Vec::new(), Skipped::default());
    for (r, row) in body.iter().enumerate() {
        let cell = |c: usize| row.get(c).map_or("", |v| v.trim());
        let docs = chunk_documents(cell(text_col), chunk_chars);
        let row_id = id_col.map_or_else(|| format!("row-{}", r + 1), |c| cell(c).to_string());
        for (q, &c) in questions.iter().zip(&answer_cols) {
            let answer = cell(c);
            let lower = answer.to_lowercase();
            let gold = docs
                .iter()
                .position(|d| d.text.to_lowercase().contains(&lower));
            let tally = match (answer.is_empty(), gold) {
                (true, _) => &mut skipped.empty,
                (false, None) => &mut skipped.not_in_text,
                (false, Some(g)) => {
                    samples.push(sample(&q.question, &docs, &row_id, &q.category, g, answer));
                    continue;
                }
            };
            *tally.entry(q.category.clone()).or_default() += 1;
        }
    }
    Ok((samples, skipped))
}

fn sample(
    question: &str,
    docs: &[Document],
    id: &str,
    category: &str,
    gold: usize,
    answer: &str,
) -> Sample {
    let mut extra = Map::new();
    extra.insert("id".into(), json!(format!("{id}-{category}")));
    extra.insert("category".into(), json!(category));
    extra.insert("gold".into(), json!(gold));
    extra.insert("answers".into(), Value::from(vec![answer.to_string()]));
    let mut s = Sample::new(question, docs.to_vec());
    s.extra = extra;
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_commas_and_line_breaks() {
        let rows = parse_csv("a,b\r\n\"x, \"\"y\"\"\",\"two\nlines\"\n3,\n").unwrap();
        assert_eq!(
            rows,
            vec![
                vec!["a".to_string(), "b".into()],
                vec!["x, \"y\"".into(), "two\nlines".into()],
                vec!["3".into(), "".into()],
            ]
        );
        assert!(parse_csv("a,\"open").is_err());
    }

    #[test]
    fn question_specs_parse_and_refuse_bad_ones() {
        let q: QuestionSpec = "state=In which state is it? (a=b)=inc_state"
            .parse()
            .unwrap();
        assert_eq!(q.category, "state");
        assert_eq!(q.question, "In which state is it? (a=b)");
        assert_eq!(q.column, "inc_state");
        assert!("state=no column".parse::<QuestionSpec>().is_err());
        assert!("=q=c".parse::<QuestionSpec>().is_err());
    }

    #[test]
    fn rows_become_samples_with_gold_and_skips_are_counted() {
        let text = "Acme makes pumps.\nAcme was incorporated in Delaware.\nIt has 1,200 employees.";
        let rows = parse_csv(&format!(
            "cik,text,state,employees\n1,\"{text}\",Delaware,\"1,200\"\n2,\"{text}\",,\"9,999\"\n"
        ))
        .unwrap();
        let qs: Vec<QuestionSpec> = vec![
            "state=Where is it incorporated?=state".parse().unwrap(),
            "employees=How many employees?=employees".parse().unwrap(),
        ];
        let (samples, skipped) = samples_from_table(&rows, "text", Some("cik"), &qs, 40).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].docs.len(), 3);
        assert_eq!(samples[0].gold(), Some(1));
        assert_eq!(samples[1].gold(), Some(2));
        assert_eq!(samples[0].extra["id"], "1-state");
        assert_eq!(skipped.empty["state"], 1);
        assert_eq!(skipped.not_in_text["employees"], 1);
        let err = samples_from_table(&rows, "body", None, &qs, 40).unwrap_err();
        assert!(err.to_string().contains("no column `body`"), "{err}");
    }
}

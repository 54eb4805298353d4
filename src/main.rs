//! headscope's binary: parse the command line, dispatch, print errors cleanly.

mod cli;
mod commands;

use clap::Parser;

/// glibc serves every allocation above 32 MiB with a fresh `mmap`, so each large activation (a
/// batch of attention scores, the logits) is page-faulted and zeroed anew on every layer: ~30% of a
/// batched ablation sweep. Serving them from the heap lets freed blocks be reused.
///
/// One arena for every thread: a thread other than the main one (the explorer's engine worker)
/// otherwise gets its own arena, whose heaps cannot hold a block above 64 MiB, so its large blocks
/// were still fresh `mmap`s (the head lens ran 13 s on the main thread, 16.6 s on the worker).
/// The threads that compute (rayon's) write into buffers allocated by their caller, so they do
/// not contend for the one arena's lock.
fn keep_large_allocations_in_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

fn main() {
    keep_large_allocations_in_heap();
    let cli = cli::Cli::parse();
    let result = match cli.command {
        Some(cli::Command::Run(args)) => commands::run(args),
        Some(cli::Command::Analyze(args)) => commands::analyze::analyze(*args),
        Some(cli::Command::Bench(cmd)) => commands::bench(cmd),
        Some(cli::Command::Screenshot(args)) => commands::explore::screenshot(*args),
        Some(cli::Command::Dataset(cmd)) => commands::dataset::dataset(cmd),
        Some(cli::Command::Study(cmd)) => commands::study::study(cmd),
        Some(cli::Command::Export(args)) => commands::export::export(args),
        Some(cli::Command::Prune(args)) => commands::prune::prune(*args),
        None => commands::explore::explore(cli.explore),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

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

/// The system allocator, asking the kernel for transparent huge pages under every large block.
///
/// With the kernel's default THP mode (`madvise`) heap memory is mapped in 4 KiB pages, so
/// loading a model faults in every page of its f32 weights one by one: 1.5 million faults for
/// Qwen2-1.5B's 6 GiB, most of its load time on a virtual machine (system time 12–25 s against
/// 8 s of user time: `benches/results/load-1.5b/runs.jsonl`, binary `old`). 2 MiB pages take 512
/// times fewer faults, and fewer TLB misses on the weights.
struct HugePageHint;

/// Blocks from this size on are advised (a weight matrix, a logits block).
const HUGE_PAGE_MIN_BLOCK: usize = 4 << 20;

impl HugePageHint {
    /// `MADV_HUGEPAGE` on the whole 2 MiB pages inside `[ptr, ptr + size)`; best effort (the
    /// kernel may have THP off, and a failed hint changes nothing).
    fn advise(ptr: *mut u8, size: usize) {
        #[cfg(target_os = "linux")]
        if size >= HUGE_PAGE_MIN_BLOCK && !ptr.is_null() {
            const HUGE: usize = 2 << 20;
            let start = (ptr as usize).next_multiple_of(HUGE);
            let end = (ptr as usize + size) & !(HUGE - 1);
            if end > start {
                // SAFETY: the range lies inside a block the allocator just handed out.
                unsafe {
                    libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
                }
            }
        }
    }
}

// SAFETY: every call is forwarded to `System`; `advise` only adds a hint on memory it returned.
unsafe impl std::alloc::GlobalAlloc for HugePageHint {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let ptr = unsafe { std::alloc::System.alloc(layout) };
        Self::advise(ptr, layout.size());
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // Advised before zeroing would be better, but `calloc` zeroes (or maps) inside.
        let ptr = unsafe { std::alloc::System.alloc_zeroed(layout) };
        Self::advise(ptr, layout.size());
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        let ptr = unsafe { std::alloc::System.realloc(ptr, layout, size) };
        Self::advise(ptr, size);
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: HugePageHint = HugePageHint;

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

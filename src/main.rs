fn main() {
    // Behave like other Unix tools when the reader of a pipe goes away (`ocvault ls | head`).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    tune_allocator();
    std::process::exit(ocvault::cli::main());
}

/// glibc's malloc keeps freed memory in per-thread arenas and, after the first large buffer
/// is freed, raises its mmap threshold up to 32 MiB, so every later pack buffer (16 MiB),
/// read batch and pack read comes from an arena and stays resident after it is freed. A fixed
/// 1 MiB threshold sends large buffers to mmap, returned to the system on free; two arenas
/// bound the rest. Measured on the Linux source tree: initial snapshot peak RSS 151 -> 82 MiB
/// at no measurable cost in time (README, Performance).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() {
    // Behave like other Unix tools when the reader of a pipe goes away (`ocvault ls | head`).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(ocvault::cli::main());
}

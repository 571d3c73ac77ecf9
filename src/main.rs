//! The `walfs` command: the mount daemon and the same work without a mount.

mod cli;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Err(e) = cli::logging::init(&args) {
        eprintln!("walfs: mount: {e}");
        std::process::exit(1);
    }
    std::process::exit(cli::main());
}

//! The `walfs` command: the mount daemon and the same work without a mount.

mod cli;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    std::process::exit(cli::main());
}

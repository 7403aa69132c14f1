//! The server program in its test profile, built inside this crate so its
//! tests can start it as separate processes (two replicas sharing one
//! PostgreSQL). Unlike `xianlu-server`, it also trusts the development actor
//! header.

fn main() -> std::process::ExitCode {
    xianlu_server::cli::main_with(xianlu_server::cli::Profile::Test)
}

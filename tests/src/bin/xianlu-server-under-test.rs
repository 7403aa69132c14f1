//! The real server program, built inside this crate so its tests can start it
//! as separate processes (two replicas sharing one PostgreSQL).

fn main() -> std::process::ExitCode {
    xianlu_server::cli::main()
}

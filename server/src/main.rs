fn main() -> std::process::ExitCode {
    xianlu_server::cli::main()
}

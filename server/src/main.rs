use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = xianlu_server::cli::Cli::parse();
    match xianlu_server::cli::run(cli).await {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) => {
            eprintln!("xianlu-server: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}

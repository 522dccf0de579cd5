//! `token-handler`: see the library documentation and README.md.

fn main() -> std::process::ExitCode {
    token_handler::cli::main()
}

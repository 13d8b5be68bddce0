//! The `portcullis` command line: parses arguments, builds the pieces, runs them.

use clap::{Args, Parser, Subcommand};
use portcullis::config::Config;
use portcullis::policy::{Account, Host, Limits, Policies, PolicySpec, Request, SettingsSource};
use portcullis::scope::Scope;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Authorization gateway for OCI/Docker registries"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Checks a config: parses it, reads the files it names, loads and configures every
    /// policy. Exits 0 when all is well, 1 with the reason otherwise.
    Check {
        /// The config file.
        #[arg(long, default_value = "portcullis.toml")]
        config: PathBuf,
    },
    /// Work with policy modules.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Runs a policy module against requests and prints each decision as a JSON line.
    Eval(EvalArgs),
}

#[derive(Args)]
struct EvalArgs {
    /// The policy component (.wasm).
    module: PathBuf,
    /// A JSON file with the policy's settings (default: `{}`).
    #[arg(long)]
    settings: Option<PathBuf>,
    /// The account asking; empty or absent means anonymous.
    #[arg(long, default_value = "")]
    account: String,
    /// A group of the account (repeatable).
    #[arg(long = "group")]
    groups: Vec<String>,
    /// A scope such as `repository:team/app:pull,push` (repeatable).
    #[arg(long = "scope", required = true)]
    scopes: Vec<String>,
    /// The registry service.
    #[arg(long, default_value = "registry")]
    service: String,
    /// The client's IP address.
    #[arg(long)]
    ip: Option<String>,
    /// The policy's CPU deadline per decision.
    #[arg(long, default_value_t = 50)]
    timeout_ms: u64,
    /// The policy's memory cap.
    #[arg(long, default_value_t = 16)]
    memory_mb: usize,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { config } => check(&config),
        Command::Policy(PolicyCommand::Eval(args)) => eval(args),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("portcullis: {message}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &Path) -> Result<ExitCode, String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let identity = &config.identity;
    let files = [Some(&config.token.key), Some(&config.token.certificate)]
        .into_iter()
        .chain([identity.htpasswd.as_ref(), identity.groups.as_ref()])
        .chain([
            config.server.tls_cert.as_ref(),
            config.server.tls_key.as_ref(),
        ])
        .flatten();
    for file in files {
        std::fs::metadata(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    }
    let host = Host::new().map_err(|e| format!("cannot start the wasm engine: {e:#}"))?;
    let policies = Policies::load(host, config.policy_specs()).map_err(|e| e.to_string())?;
    for status in policies.status() {
        println!(
            "policy `{}` loaded: {} {}",
            status.name,
            status.module.display(),
            status.digest
        );
    }
    println!("{}: ok", path.display());
    Ok(ExitCode::SUCCESS)
}

/// Prints one JSON line per scope; exits 1 if the module fails to load or any decision faults.
fn eval(args: EvalArgs) -> Result<ExitCode, String> {
    let scopes = args
        .scopes
        .iter()
        .map(|s| s.parse::<Scope>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let spec = PolicySpec {
        name: args.module.file_stem().map_or_else(
            || "policy".into(),
            |stem| stem.to_string_lossy().into_owned(),
        ),
        module: args.module.clone(),
        settings: args
            .settings
            .map_or(SettingsSource::Empty, SettingsSource::File),
        limits: Limits {
            timeout: Duration::from_millis(args.timeout_ms),
            memory_bytes: args.memory_mb << 20,
        },
    };
    let host = Host::new().map_err(|e| format!("cannot start the wasm engine: {e:#}"))?;
    let policy = host
        .load(&spec, spec.read().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let account = if args.account.is_empty() {
        Account::anonymous()
    } else {
        Account::user(&args.account, args.groups)
    };
    let mut code = ExitCode::SUCCESS;
    for scope in &scopes {
        let mut request = Request::new(account.clone(), scope.into(), &args.service);
        request.client_ip = args.ip.clone();
        let line = match policy.authorize(&request) {
            Ok(decision) => serde_json::json!({
                "scope": scope.to_string(),
                "granted": decision.granted,
                "reason": decision.reason,
            }),
            Err(fault) => {
                code = ExitCode::FAILURE;
                serde_json::json!({
                    "scope": scope.to_string(),
                    "granted": [],
                    "error": format!("policy `{}` {fault}", spec.name),
                })
            }
        };
        println!("{line}");
    }
    Ok(code)
}

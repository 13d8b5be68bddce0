//! The `portcullis` command line: parses arguments, builds the pieces, runs them.

use clap::{Args, Parser, Subcommand};
use portcullis::config::{Config, LogFormat};
use portcullis::policy::{
    Account, Host, Limits, ModuleSource, Operation, PolicySpec, Request, Scope as PolicyScope,
    SettingsSource,
};
use portcullis::proxy::Route;
use portcullis::scope::Scope;
use portcullis::server::{self, App, Live};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
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
    /// Serves the token endpoint (and, with [upstream], the registry API).
    Serve {
        /// The config file.
        #[arg(long, default_value = "portcullis.toml")]
        config: PathBuf,
    },
    /// Checks a config: parses it, reads the files it names, loads and configures every
    /// policy. Exits 0 when all is well, 1 with the reason otherwise.
    Check {
        /// The config file.
        #[arg(long, default_value = "portcullis.toml")]
        config: PathBuf,
    },
    /// Writes token.key (PKCS#8) and a self-signed token.crt, the registry's rootcertbundle;
    /// with --session, the console's session.key instead.
    Keygen {
        /// The directory to write into.
        #[arg(long)]
        out: PathBuf,
        /// RSA 2048 (RS256) instead of EC P-256 (ES256).
        #[arg(long, conflicts_with = "session")]
        rsa: bool,
        /// Write (or rotate) session.key, the console's key for sessions and personal
        /// tokens: a new key goes first, the ones already there still open what they sealed.
        #[arg(long)]
        session: bool,
    },
    /// Adds or replaces a user's bcrypt entry in an htpasswd file; the password is read from
    /// standard input.
    Passwd {
        /// The htpasswd file (created if missing).
        file: PathBuf,
        /// The user name.
        user: String,
        /// bcrypt cost (4 to 17, as `htpasswd -C`).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(4..=i64::from(portcullis::identity::MAX_BCRYPT_COST)))]
        cost: u32,
    },
    /// Work with policy modules.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Ask the identity sources of a config.
    #[command(subcommand)]
    Identity(IdentityCommand),
}

#[derive(Subcommand)]
enum IdentityCommand {
    /// Shows what a workload token (or a set of claims) becomes under a config: the
    /// account, groups and claims, each `require` with its value, and why a login would be
    /// refused. Prints JSON; exits 0 when the login would succeed, 1 when not.
    Test {
        /// The config file.
        #[arg(long, default_value = "portcullis.toml")]
        config: PathBuf,
        /// A file holding the workload's JWT, verified against its issuer's keys.
        #[arg(long, required_unless_present = "claims", conflicts_with = "claims")]
        jwt: Option<PathBuf>,
        /// A JSON file of claims, taken as given (no signature to check).
        #[arg(long)]
        claims: Option<PathBuf>,
        /// The issuer whose rules apply, when the claims have no `iss`.
        #[arg(long)]
        issuer: Option<String>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Runs a policy module against requests and prints each decision as a JSON line.
    Eval(Box<EvalArgs>),
    /// Runs fixture files: each case's request through the policy set it names, as served,
    /// against what must come out. Prints each failing case and `N passed, N failed`; exits
    /// 1 when any failed.
    Test {
        /// Fixture files (TOML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Decides every decision of decision logs again with a candidate config's policy set,
    /// and reports what changes: widened (granted now, refused then) and narrowed, by
    /// account and repository. Exits 1 when anything widens, unless --allow-widening.
    Replay {
        /// A decision log (`[log] decisions`), JSON lines (repeatable).
        #[arg(long = "log", required = true)]
        logs: Vec<PathBuf>,
        /// The candidate config: its [[policy]] set decides.
        #[arg(long)]
        config: PathBuf,
        /// The report as JSON, for CI.
        #[arg(long)]
        json: bool,
        /// Exit 0 even when access widens (a change meant to grant more).
        #[arg(long)]
        allow_widening: bool,
    },
    /// Writes a new policy crate that builds on its own: `cargo test`, then `cargo wasm`.
    New {
        /// The policy's name (a crate name: lowercase, digits, `-`).
        name: String,
        /// Where the crate's directory goes.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The SDK checkout to depend on by path (default: the published crate, by version).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Publishes a policy module as an OCI artifact (a WebAssembly component: one
    /// `application/wasm` layer), signed in cosign's format with --sign; prints its digest.
    /// `[[policy]] oci` serves it. A registry on loopback is reached over plain http.
    Push(PushArgs),
}

#[derive(Args)]
struct PushArgs {
    /// The policy component (.wasm).
    module: PathBuf,
    /// Where: `host[:port]/repository:tag` (or `@sha256:...` to push by digest alone).
    reference: String,
    /// A cosign private key to sign the artifact with (encrypted, as `cosign
    /// generate-key-pair` writes it, or a PKCS#8 ECDSA P-256 key).
    #[arg(long)]
    sign: Option<PathBuf>,
    /// A file whose first line is the signing key's passphrase (else COSIGN_PASSWORD).
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
    /// The registry user, when it asks for a login.
    #[arg(long)]
    username: Option<String>,
    /// A file whose first line is the registry password (else PORTCULLIS_REGISTRY_PASSWORD).
    #[arg(long)]
    password_file: Option<PathBuf>,
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
    /// Where the account comes from: `htpasswd` (default), or an OIDC issuer's URL.
    #[arg(long, default_value = "htpasswd")]
    source: String,
    /// A claim of the account's token, `NAME=VALUE` (repeatable), as a workload logs in.
    #[arg(long = "claim", value_parser = parse_claim)]
    claims: Vec<(String, String)>,
    /// A scope such as `repository:team/app:pull,push` (repeatable), as a token request
    /// asks it.
    #[arg(long = "scope", required_unless_present = "requests")]
    scopes: Vec<String>,
    /// A registry request as gateway mode sees it, e.g. `PUT /v2/team/app/manifests/v1`
    /// (repeatable): the policy is asked for each scope it needs, with the operation.
    #[arg(long = "request")]
    requests: Vec<String>,
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
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. }) {
        init_logging(LogFormat::Text);
    }
    let result = match cli.command {
        Command::Serve { config } => serve(&config),
        Command::Check { config } => check(&config),
        Command::Keygen {
            out, session: true, ..
        } => session_keygen(&out),
        Command::Keygen { out, rsa, .. } => keygen(&out, rsa),
        Command::Passwd { file, user, cost } => passwd(&file, &user, cost),
        Command::Policy(PolicyCommand::Eval(args)) => eval(*args),
        Command::Policy(PolicyCommand::Test { files }) => policy_test(&files),
        Command::Policy(PolicyCommand::Replay {
            logs,
            config,
            json,
            allow_widening,
        }) => policy_replay(&logs, &config, json, allow_widening),
        Command::Policy(PolicyCommand::New { name, dir, sdk }) => {
            portcullis::policy::scaffold::new_policy(&name, &dir, sdk.as_deref())
                .map(|root| {
                    println!(
                        "wrote {}: cd there, `cargo test`, then `cargo wasm` (README.md)",
                        root.display()
                    );
                    ExitCode::SUCCESS
                })
                .map_err(|e| e.to_string())
        }
        Command::Policy(PolicyCommand::Push(args)) => policy_push(&args),
        Command::Identity(IdentityCommand::Test {
            config,
            jwt,
            claims,
            issuer,
        }) => identity_test(
            &config,
            jwt.as_deref(),
            claims.as_deref(),
            issuer.as_deref(),
        ),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("portcullis: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The process log on standard error, filtered by `RUST_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,notify=error"));
    // Colour codes are for a terminal; in a file or a collector they are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn serve(path: &Path) -> Result<ExitCode, String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    init_logging(config.log.format);
    let listen = config.server.listen;
    let admin_listen = config.server.admin_listen;
    let tls = config.server.tls_cert.is_some();
    let live = Live::start(path).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        // Signals are taken over before anyone is told we listen: a SIGHUP or SIGTERM sent
        // on seeing that line would otherwise meet the default action and kill the process.
        let shutdown = shutdown_signal()?;
        reload_on_hangup(live.clone())?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let admin = match admin_listen {
            Some(address) => {
                Some(tokio::net::TcpListener::bind(address).await.map_err(|e| {
                    format!("cannot listen on {address} ([server] admin_listen): {e}")
                })?)
            }
            None => None,
        };
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        // On stdout so scripts and tests started with port 0 learn the port.
        let scheme = if tls { "https" } else { "http" };
        println!("portcullis listening on {scheme}://{local}");
        if let Some(admin) = &admin {
            let local = admin.local_addr().map_err(|e| e.to_string())?;
            tracing::info!("metrics and status on http://{local}");
        }
        server::serve(live, listener, admin, shutdown)
            .await
            .map_err(|e| e.to_string())?;
        Ok(ExitCode::SUCCESS)
    })
}

/// SIGHUP re-reads the config file and every file it names, as the watchers would on a change.
fn reload_on_hangup(live: Arc<Live>) -> Result<(), String> {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading every file");
            let live = live.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || live.reload()).await {
                tracing::error!(error = %e, "reload task failed");
            }
        }
    });
    Ok(())
}

/// Ctrl-C (SIGINT) or SIGTERM, handled from the moment this returns.
fn shutdown_signal() -> Result<impl Future<Output = ()>, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let handle = |kind, name: &str| signal(kind).map_err(|e| format!("cannot handle {name}: {e}"));
    let mut interrupt = handle(SignalKind::interrupt(), "SIGINT")?;
    let mut terminate = handle(SignalKind::terminate(), "SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down");
    })
}

fn keygen(dir: &Path, rsa: bool) -> Result<ExitCode, String> {
    let (key, cert) = portcullis::token::generate(dir, rsa).map_err(|e| e.to_string())?;
    println!("wrote {} and {}", key.display(), cert.display());
    println!(
        "token-server mode: give the registry auth.token.rootcertbundle = {} \
         (docs/token-server.md)",
        cert.display()
    );
    println!(
        "gateway mode: the registry keeps no auth section; the key signs the gateway's own tokens"
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes `dir/session.key`, or puts a new key first in the one there (a rotation).
fn session_keygen(dir: &Path) -> Result<ExitCode, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("session.key");
    let existing = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let line = portcullis::seal::SealKeys::generate_line()?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Written beside it and renamed over it: a replica never reads half a file.
    let tmp = dir.join(".session.key.new");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    file.write_all(format!("{line}\n{existing}").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    if existing.trim().is_empty() {
        println!("wrote {}", path.display());
    } else {
        println!(
            "added a new first key to {}: the older keys still open what they sealed; delete \
             their lines once sessions and personal tokens sealed with them may end",
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn passwd(file: &Path, user: &str, cost: u32) -> Result<ExitCode, String> {
    if user.is_empty() || user.contains(':') || user.contains(char::is_whitespace) {
        return Err(format!("{user:?} is not a user name (no `:` or spaces)"));
    }
    use std::io::IsTerminal;
    // At a terminal (`docker run -it ... passwd`), asked twice and never echoed; piped in,
    // one line read as it is.
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("password for {user}: "))
            .map_err(|e| format!("cannot read the password: {e}"))?;
        let again = rpassword::prompt_password("again: ")
            .map_err(|e| format!("cannot read the password: {e}"))?;
        if first != again {
            return Err("the two passwords differ; nothing was changed".into());
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    let password = password.as_str();
    if password.is_empty() {
        return Err("empty password".into());
    }
    let hash = bcrypt::hash(password, cost).map_err(|e| format!("cannot hash: {e}"))?;
    let (existing, metadata) = match std::fs::read_to_string(file) {
        Ok(text) => (
            text,
            Some(std::fs::metadata(file).map_err(|e| format!("{}: {e}", file.display()))?),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), None),
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    let prefix = format!("{user}:");
    let mut lines: Vec<String> = existing
        .lines()
        .filter(|line| !line.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    lines.push(format!("{user}:{hash}"));
    replace_file(file, &(lines.join("\n") + "\n"), metadata.as_ref())
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    println!("{user} set in {}", file.display());
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` beside `file` and renames it over, so a watching gateway never reads half
/// a file. The new file keeps the old one's mode and, where we may, its owner: an htpasswd
/// holds password hashes, and one made private stays private (a new one is 0600).
fn replace_file(
    file: &Path,
    text: &str,
    existing: Option<&std::fs::Metadata>,
) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let mode = existing.map_or(0o600, |m| m.mode() & 0o7777);
    let tmp = file.with_extension("portcullis-tmp");
    // A leftover from an interrupted run would keep its own mode.
    let _ = std::fs::remove_file(&tmp);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    out.write_all(text.as_bytes())?;
    if let Some(existing) = existing {
        // Only root may give a file away; anyone else keeps it as their own.
        let _ = std::os::unix::fs::fchown(&out, Some(existing.uid()), Some(existing.gid()));
    }
    // Set after the owner: chown clears set-id bits, and the umask trimmed the create mode.
    out.set_permissions(std::fs::Permissions::from_mode(mode))?;
    out.sync_all()?;
    std::fs::rename(&tmp, file)
}

/// The wasm host of the tools (`policy eval`, `test`, `replay`): compiled code is kept in
/// the user's cache directory, so a policy is compiled once, not at every run.
fn tool_host() -> Result<Host, String> {
    let host = Host::new().map_err(|e| format!("cannot start the wasm engine: {e:#}"))?;
    Ok(
        match portcullis::policy::compiled::CompiledStore::for_tools() {
            Some(store) => host.with_store(store),
            None => host,
        },
    )
}

fn policy_push(args: &PushArgs) -> Result<ExitCode, String> {
    let first_line = |path: &Path| {
        std::fs::read_to_string(path)
            .map(|text| text.lines().next().unwrap_or_default().to_string())
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    let reference = portcullis::oci::Reference::parse(&args.reference)?;
    let module = std::fs::read(&args.module)
        .map_err(|e| format!("cannot read {}: {e}", args.module.display()))?;
    let signer = match &args.sign {
        Some(key) => {
            let passphrase = match &args.passphrase_file {
                Some(file) => Some(first_line(file)?),
                None => std::env::var("COSIGN_PASSWORD").ok(),
            };
            Some(portcullis::signatures::Signer::read(
                key,
                passphrase.as_deref(),
            )?)
        }
        None => None,
    };
    let auth = match &args.username {
        Some(username) => portcullis::oci::Auth::Login {
            username: username.clone(),
            password: match &args.password_file {
                Some(file) => first_line(file)?,
                None => std::env::var("PORTCULLIS_REGISTRY_PASSWORD").map_err(|_| {
                    "--username needs --password-file or PORTCULLIS_REGISTRY_PASSWORD".to_string()
                })?,
            },
        },
        None => portcullis::oci::Auth::Anonymous,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let digest = runtime.block_on(portcullis::artifacts::push(
        module.into(),
        &reference,
        signer.as_ref(),
        auth,
    ))?;
    let signed = if signer.is_some() { ", signed" } else { "" };
    println!("pushed {reference} as {digest}{signed}");
    Ok(ExitCode::SUCCESS)
}

fn check(path: &Path) -> Result<ExitCode, String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let app = App::new(config).map_err(|e| e.to_string())?;
    for status in app.policy_status() {
        println!(
            "policy `{}` loaded: {} {}",
            status.name,
            status.module.display(),
            status.digest
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let mut failed = false;
    for (source, result) in runtime.block_on(app.check_sources()) {
        match result {
            Ok(said) => println!("{source}: {said}"),
            Err(error) => {
                failed = true;
                eprintln!("portcullis: {source}: {error}");
            }
        }
    }
    if failed {
        return Ok(ExitCode::FAILURE);
    }
    println!("{}: ok", path.display());
    Ok(ExitCode::SUCCESS)
}

/// Writes a command's report to stdout whole; a reader that stopped early (`| head`) is no
/// error, and never a panic.
fn print_report(report: &str) -> Result<(), String> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(report.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("cannot write the report: {e}"))
        }
        _ => Ok(()),
    }
}

/// `portcullis policy replay`: the logs' decisions decided again by `config`'s policies.
fn policy_replay(
    logs: &[PathBuf],
    config: &Path,
    json: bool,
    allow_widening: bool,
) -> Result<ExitCode, String> {
    let candidate = Config::load(config).map_err(|e| e.to_string())?;
    let host = tool_host()?;
    let specs = candidate.policy_specs();
    portcullis::artifacts::pull_once(&candidate, &specs.iter().collect::<Vec<_>>())?;
    let set = portcullis::policy::Policies::load(host, specs)
        .map_err(|e| e.to_string())?
        .current();
    let logs: Vec<&Path> = logs.iter().map(PathBuf::as_path).collect();
    let replay = portcullis::policy::replay::replay(&logs, &set)?;
    // Written whole, and a reader that stops early (`| head`) is no error.
    let mut out = String::new();
    if json {
        out = serde_json::to_string_pretty(&replay).map_err(|e| e.to_string())? + "\n";
    } else {
        out.push_str(&format!(
            "replayed {} decisions against {}: {} unchanged, {} widened, {} narrowed\n",
            replay.decisions,
            config.display(),
            replay.unchanged,
            replay.widened,
            replay.narrowed
        ));
        for change in &replay.changes {
            let e = &change.example;
            out.push_str(&format!(
                "{} widened, {} narrowed: {:?} on {}; e.g. {} {}{}: [{}] -> [{}]\n",
                change.widened,
                change.narrowed,
                change.account,
                change.resource,
                e.time,
                e.scope,
                e.operation
                    .as_deref()
                    .map(|op| format!(" ({op})"))
                    .unwrap_or_default(),
                e.before.join(", "),
                e.after.join(", ")
            ));
        }
    }
    print_report(&out)?;
    if !replay.unreadable.is_empty() {
        eprintln!(
            "portcullis: lines that are no decision (skipped): {}",
            replay.unreadable.join(", ")
        );
    }
    Ok(if replay.widened > 0 && !allow_widening {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `portcullis policy test`: each fixture file's cases, the failures with expected against
/// got, the rules no case reached, and the count.
fn policy_test(files: &[PathBuf]) -> Result<ExitCode, String> {
    let host = tool_host()?;
    let (mut passed, mut failed) = (0, 0);
    let mut out = String::new();
    for file in files {
        let report = portcullis::policy::fixtures::run(file, &host).map_err(|e| e.to_string())?;
        for case in &report.cases {
            if case.problems.is_empty() {
                passed += 1;
                out.push_str(&format!("{}: {} ... ok\n", file.display(), case.name));
            } else {
                failed += 1;
                out.push_str(&format!("{}: {} ... FAILED\n", file.display(), case.name));
                for problem in &case.problems {
                    out.push_str(&format!("    {problem}\n"));
                }
            }
        }
        for (policy, rules) in &report.unreached {
            let rules: Vec<String> = rules.iter().map(ToString::to_string).collect();
            out.push_str(&format!(
                "{}: no case reached {policy}'s rule {}\n",
                file.display(),
                rules.join(", ")
            ));
        }
    }
    out.push_str(&format!("{passed} passed, {failed} failed\n"));
    print_report(&out)?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `portcullis identity test`: what a workload's token or claims become, as JSON.
fn identity_test(
    config: &Path,
    jwt: Option<&Path>,
    claims: Option<&Path>,
    issuer: Option<&str>,
) -> Result<ExitCode, String> {
    use portcullis::identity::Presented;
    let read =
        |path: &Path| std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()));
    let presented = match (jwt, claims) {
        (Some(jwt), _) => Presented::Token(read(jwt)?.trim().to_string()),
        (None, Some(claims)) => Presented::Claims(
            serde_json::from_str(&read(claims)?)
                .map_err(|e| format!("{}: not a JSON object of claims: {e}", claims.display()))?,
        ),
        (None, None) => return Err("give --jwt FILE or --claims FILE".into()),
    };
    let config = Config::load(config).map_err(|e| e.to_string())?;
    let app = App::new(config).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let found = runtime.block_on(app.identity().assess(presented, issuer))?;
    let principal = found.principal.as_ref();
    let report = serde_json::json!({
        "issuer": found.issuer,
        "verified": found.verified,
        "account": principal.map(|p| &p.name),
        "groups": principal.map(|p| &p.groups),
        "claims": principal.map(|p| &p.claims),
        "require": found.requirements,
        "refused": found.refused,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
    );
    Ok(if found.refused.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `NAME=VALUE` of `--claim`.
fn parse_claim(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not NAME=VALUE")),
    }
}

/// Prints one JSON line per scope; exits 1 if the module fails to load or any decision faults.
fn eval(args: EvalArgs) -> Result<ExitCode, String> {
    let mut asks: Vec<(PolicyScope, Option<Operation>)> = Vec::new();
    for scope in &args.scopes {
        let scope = scope.parse::<Scope>().map_err(|e| e.to_string())?;
        asks.push(((&scope).into(), None));
    }
    for line in &args.requests {
        let (method, target) = line
            .split_once(' ')
            .ok_or_else(|| format!("--request {line:?}: expected `METHOD /v2/...`"))?;
        let method = hyper::Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("--request {line:?}: {method:?} is not an HTTP method"))?;
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let route = Route::parse(&method, path, query, &hyper::HeaderMap::new())
            .map_err(|e| format!("--request {line:?}: {e}"))?;
        asks.extend(route.needs().into_iter().map(|(s, op)| (s, Some(op))));
    }
    let spec = PolicySpec {
        name: args.module.file_stem().map_or_else(
            || "policy".into(),
            |stem| stem.to_string_lossy().into_owned(),
        ),
        module: ModuleSource::File(args.module.clone()),
        settings: args
            .settings
            .map_or(SettingsSource::Empty, SettingsSource::File),
        limits: Limits {
            timeout: Duration::from_millis(args.timeout_ms),
            memory_bytes: args.memory_mb << 20,
        },
    };
    let host = tool_host()?;
    let policy = host
        .load(&spec, spec.read().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let account = if args.account.is_empty() {
        Account::anonymous()
    } else {
        Account::user(&args.account, args.groups).from_source(&args.source, args.claims)
    };
    let mut code = ExitCode::SUCCESS;
    let mut out = String::new();
    for (scope, operation) in asks {
        let shown = format!("{}:{}:{}", scope.type_, scope.name, scope.actions.join(","));
        let mut request = Request::new(account.clone(), scope, &args.service);
        request.client_ip = args.ip.clone();
        request.operation = operation;
        let line = match policy.authorize(&request) {
            Ok(decision) => serde_json::json!({
                "scope": shown,
                "granted": decision.granted,
                "reason": decision.reason,
            }),
            Err(fault) => {
                code = ExitCode::FAILURE;
                serde_json::json!({
                    "scope": shown,
                    "granted": [],
                    "error": format!("policy `{}` {fault}", spec.name),
                })
            }
        };
        out.push_str(&format!("{line}\n"));
    }
    print_report(&out)?;
    Ok(code)
}

//! The command line: `serve`, `user add`, `token create`, `check`.

use crate::config::{Config, SettingArgs};
use crate::contract::handover::Sockets;
use crate::contract::wake::Waker;
use crate::panel::auth::Throttle;
use crate::panel::control::{tokens, users, Control, ControlError};
use crate::panel::policy::Actor;
use crate::panel::{self, AppState};
use crate::store::Store;
use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(
    name = "lodge",
    version,
    about = "A multi-tenant web hosting control panel"
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: SettingArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run lodge: the panel (dashboard and REST API), and as root the agent that makes
    /// tenants real (users, PHP-FPM pools) and supervises them
    Serve,
    /// Run the panel alone (what the agent starts as the `lodge` user)
    #[command(hide = true)]
    Panel,
    /// Run the proxy alone (what the agent starts as `lodge-www`, listeners handed over)
    #[command(hide = true)]
    Proxy,
    /// Manage accounts
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API tokens
    #[command(subcommand)]
    Token(TokenCommand),
    /// Check the configuration, the store and the service, then exit
    Check,
    /// Install lodge as a systemd service (lodge.service), naming this binary
    InstallService {
        /// Start it too
        #[arg(long)]
        now: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account (how the first admin is made)
    Add {
        /// The user name
        name: String,
        /// admin, reseller or tenant
        #[arg(long)]
        role: String,
        /// Read the password from standard input (first line)
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token for an account and print it (shown once)
    Create {
        /// The account's user name
        username: String,
        /// A label for the token list
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

pub fn main(cli: Cli) -> ExitCode {
    init_tracing();
    // The proxy runs a single-threaded runtime per core of its own (see `proxy::run`).
    let runtime = if matches!(cli.command, Command::Proxy) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lodge: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lodge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LODGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// As root, the store is opened as the user who owns its directory (the panel's `lodge` on
/// a real install): root never writes where a less trusted user could have put a link. A
/// missing directory is made first, for the panel's user, as `serve` makes it.
fn act_as_store_owner(config: &Config) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    if !config.data_dir.exists() {
        crate::agent::make_panel_data_dir(config)?;
    }
    let meta = std::fs::metadata(&config.data_dir)
        .with_context(|| format!("looking at {}", config.data_dir.display()))?;
    if meta.uid() == 0 {
        // Root's own directory (a panel run by root alone): nobody else could change it.
        return Ok(());
    }
    let (uid, gid) = (
        nix::unistd::Uid::from_raw(meta.uid()),
        nix::unistd::Gid::from_raw(meta.gid()),
    );
    nix::unistd::setgroups(&[]).context("dropping supplementary groups")?;
    nix::unistd::setgid(gid).context("switching to the store's group")?;
    nix::unistd::setuid(uid).context("switching to the store's owner")?;
    Ok(())
}

async fn open(config: Config) -> anyhow::Result<Control> {
    let store = Store::open(&config.database_path()).await?;
    Ok(Control {
        store,
        config: Arc::new(config),
    })
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Proxy = cli.command {
        // The proxy never opens the store: it knows only the routes snapshot.
        let config = Config::load(&cli.settings)?;
        let sockets = match Sockets::from_env()? {
            Some(handed_over) => handed_over,
            None => crate::proxy::run::bind_alone(
                config.http_listen,
                config.https_listen,
                &config.run_dir,
            )?,
        };
        return crate::proxy::run::serve(config.run_dir, config.log_dir, sockets).await;
    }
    if let Command::InstallService { now } = cli.command {
        return crate::service::install(cli.settings.config.as_deref(), now);
    }
    let config = Config::load(&cli.settings)?;
    if matches!(cli.command, Command::Serve) && config.agent {
        // The agent never writes the store: the panel it starts makes it, and the agent
        // reads it read-only.
        return crate::agent::serve(config, cli.settings).await;
    }
    act_as_store_owner(&config)?;
    let control = open(config).await?;
    match cli.command {
        Command::Serve if control.config.agent => unreachable!("the agent is started above"),
        Command::Serve => {
            report_first_admin(&control).await?;
            serve_panel(control).await
        }
        Command::Panel => serve_panel(control).await,
        Command::Proxy => unreachable!("handled before the store is opened"),
        Command::InstallService { .. } => unreachable!("handled before the store is opened"),
        Command::User(UserCommand::Add {
            name,
            role,
            password_stdin,
        }) => {
            if !password_stdin {
                bail!("give the password on standard input with --password-stdin (never on the command line)");
            }
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("reading the password")?;
            let password = input.lines().next().unwrap_or("");
            let user = users::create_from_cli(&control, &name, &role, password)
                .await
                .map_err(describe)?;
            println!("created {} '{}'", user.role, user.username);
            Ok(())
        }
        Command::Token(TokenCommand::Create { username, name }) => {
            let actor = Actor::cli();
            let user = users::get(&control, &actor, &username)
                .await
                .map_err(describe)?;
            let (token, _) = tokens::issue(&control, &actor, &user, &name)
                .await
                .map_err(describe)?;
            println!("{token}");
            Ok(())
        }
        Command::Check => {
            let generation = control.store.generation().await?;
            control.store.check().await?;
            println!(
                "ok: store {} (generation {generation}), panel on {}",
                control.config.database_path().display(),
                control.config.panel_listen
            );
            println!("{}", crate::service::status());
            Ok(())
        }
    }
}

/// A control-plane refusal as a one-line message for the terminal.
fn describe(e: ControlError) -> anyhow::Error {
    match e {
        ControlError::Invalid(errors) => anyhow::anyhow!(
            "{}",
            errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        ControlError::Internal(e) => e,
        other => anyhow::anyhow!("{other}"),
    }
}

async fn report_first_admin(control: &Control) -> anyhow::Result<()> {
    if !users::has_admin(control).await.map_err(describe)? {
        eprintln!(
            "lodge: no admin yet. Make one with:\n  echo 'a-long-password' | lodge --data-dir {} user add admin --role admin --password-stdin",
            control.config.data_dir.display()
        );
    }
    Ok(())
}

async fn serve_panel(control: Control) -> anyhow::Result<()> {
    let listen = control.config.panel_listen;
    let waker = Waker::new(&control.config.run_dir);
    let state = AppState {
        control,
        throttle: Arc::new(Throttle::default()),
        waker,
    };
    // Under the agent, the socket it reports on is handed over.
    let report = Sockets::from_env()?.and_then(|s| s.report);
    panel::serve(state, listen, report, crate::contract::signals::shutdown()).await
}

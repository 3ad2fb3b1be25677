//! `brook serve`: one long-running brook that many clients share over the
//! PostgreSQL wire protocol (pgwire). Every client's statements run in one
//! [`StreamContext`]: a stream one client creates, another reads; brook's
//! settings (`SET batch_interval`) are the server's, as in one shell;
//! `SET statement_timeout` is each connection's own.
//!
//! Security: it listens on 127.0.0.1:5433 unless told otherwise, and any
//! other address needs a password file (users checked with SCRAM-SHA-256,
//! never a cleartext password), and TLS when a certificate and key are
//! given; at most `max_connections` clients at once;
//! clients may not read or write the server's files unless allowed.

mod catalog;
mod encode;
mod errors;
mod handler;
mod params;
mod subscribe;
mod tls;

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::{ClientInfo, ConnectionManager, PgWireServerHandlers};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::context::StreamContext;
use crate::error::{BrookError, Result};
use handler::{Queries, SqlText};

/// Where `brook serve` listens unless told otherwise.
pub const DEFAULT_PG_ADDR: &str = "127.0.0.1:5433";
/// Clients served at once unless told otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100;
/// PBKDF2 rounds of a SCRAM password (PostgreSQL's default).
const SCRAM_ITERATIONS: usize = 4096;

/// How `brook serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen.
    pub address: SocketAddr,
    /// `user:password` lines; required to listen beyond loopback.
    pub password_file: Option<PathBuf>,
    /// Clients served at once.
    pub max_connections: usize,
    /// Whether clients may use `COPY ... TO` and `CREATE EXTERNAL TABLE`.
    pub allow_files: bool,
    /// A certificate chain and its key (PEM): clients may then use TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// Users and their passwords, each kept only as its SCRAM salted hash.
#[derive(Debug)]
struct Users {
    salted: HashMap<String, (Vec<u8>, Vec<u8>)>,
}

impl Users {
    fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| BrookError::io(format!("password file {}", path.display()), err))?;
        let mut salted = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, password)) = line.split_once(':') else {
                return Err(BrookError::invalid(format!(
                    "password file {} line {}: expected user:password",
                    path.display(),
                    number + 1
                )));
            };
            let salt: Vec<u8> = (0..16).map(|_| rand_byte()).collect();
            let hash = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
            salted.insert(user.trim().to_string(), (salt, hash));
        }
        if salted.is_empty() {
            return Err(BrookError::invalid(format!(
                "password file {} names no user (one user:password per line)",
                path.display()
            )));
        }
        Ok(Self { salted })
    }
}

/// A byte from the system's random source (for salts).
fn rand_byte() -> u8 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.finish() as u8
}

#[async_trait]
impl AuthSource for Users {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        match self.salted.get(user) {
            Some((salt, hash)) => Ok(Password::new(Some(salt.clone()), hash.clone())),
            None => Err(PgWireError::InvalidPassword(user.to_string())),
        }
    }
}

/// No password: the clients are this machine's.
struct Trust {
    manager: Arc<ConnectionManager>,
}

#[async_trait]
impl NoopStartupHandler for Trust {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(Arc::clone(&self.manager))
    }
}

/// How clients start: trusted, signed in with SCRAM-SHA-256, or refused
/// (over the connection limit).
enum Startup {
    Trust(Arc<Trust>),
    Scram(Arc<SASLAuthStartupHandler<DefaultServerParameterProvider>>),
    Full,
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Trust(trust) => trust.on_startup(client, message).await,
            Startup::Scram(scram) => scram.on_startup(client, message).await,
            Startup::Full => Err(PgWireError::UserError(Box::new(
                pgwire::error::ErrorInfo::new(
                    "FATAL".to_string(),
                    "53300".to_string(),
                    "sorry, too many clients already".to_string(),
                ),
            ))),
        }
    }
}

struct Handlers {
    queries: Arc<Queries>,
    startup: Arc<Startup>,
    cancel: Arc<DefaultCancelHandler>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        Arc::clone(&self.queries)
    }

    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        Arc::clone(&self.queries)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.startup)
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::clone(&self.cancel)
    }
}

/// Checks `options` and binds the listener: an address beyond loopback
/// without a password file is refused, saying why.
pub async fn bind(options: &ServeOptions) -> Result<TcpListener> {
    if !options.address.ip().is_loopback() && options.password_file.is_none() {
        return Err(BrookError::invalid(format!(
            "brook serve: listening on {} lets other machines in, so it needs --pg-password-file FILE (user:password lines; clients sign in with SCRAM-SHA-256)",
            options.address
        )));
    }
    TcpListener::bind(options.address).await.map_err(|err| {
        BrookError::io(
            format!("brook serve: listening on {}", options.address),
            err,
        )
    })
}

/// Serves clients on `listener` until `stop` completes.
pub async fn serve(
    ctx: StreamContext,
    listener: TcpListener,
    options: &ServeOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let manager = Arc::new(ConnectionManager::new());
    let startup = match &options.password_file {
        Some(path) => {
            let users = Users::read(path)?;
            let mut scram = ScramAuth::new(Arc::new(users));
            scram.set_iterations(SCRAM_ITERATIONS);
            Startup::Scram(Arc::new(
                SASLAuthStartupHandler::new(Arc::new(DefaultServerParameterProvider::default()))
                    .with_scram(scram)
                    .with_connection_manager(Arc::clone(&manager)),
            ))
        }
        None => Startup::Trust(Arc::new(Trust {
            manager: Arc::clone(&manager),
        })),
    };
    let queries = Arc::new(Queries {
        ctx,
        allow_files: options.allow_files,
        parser: Arc::new(SqlText),
    });
    let cancel = Arc::new(DefaultCancelHandler::new(manager));
    let handlers = Arc::new(Handlers {
        queries: Arc::clone(&queries),
        startup: Arc::new(startup),
        cancel: Arc::clone(&cancel),
    });
    let refusing = Arc::new(Handlers {
        queries,
        startup: Arc::new(Startup::Full),
        cancel,
    });
    let tls = match &options.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
        None => None,
    };
    let permits = Arc::new(Semaphore::new(options.max_connections));
    tokio::pin!(stop);
    loop {
        let (socket, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => return Ok(()),
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            // Over the limit: the client is told, as PostgreSQL tells it.
            let refusing = Arc::clone(&refusing);
            let tls = tls.clone();
            tokio::spawn(async move {
                let _ = pgwire::tokio::process_socket(socket, tls, refusing).await;
            });
            continue;
        };
        let handlers = Arc::clone(&handlers);
        let tls = tls.clone();
        tokio::spawn(async move {
            let _ = pgwire::tokio::process_socket(socket, tls, handlers).await;
            drop(permit);
        });
    }
}

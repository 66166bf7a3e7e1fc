//! Start-up: connect the store, migrate, start the actors, bind the listener and build the
//! actix-web server. `Application::build` binds port 0 in tests; `run` serves until stopped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use actix_web::body::{BoxBody, EitherBody};
use actix_web::dev::{Server, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers, from_fn};
use actix_web::{App, HttpServer, ResponseError, web};
use anyhow::Context;

use crate::actors::hub::Hub;
use crate::actors::indexer::SearchIndexer;
use crate::actors::presence::Presence;
use crate::auth::{Passwords, Tokens};
use crate::config::Config;
use crate::http::error::ApiError;
use crate::http::{self, extract};
use crate::state::{AppState, StateParts};
use crate::store::Store;
use crate::store::search::Search;

/// How often idle rate-limiter keys are dropped (and metric buffers drained).
const LIMITER_EVICTION_EVERY: Duration = Duration::from_secs(60);

/// A built server, bound and ready to run.
pub struct Application {
    server: Server,
    addr: SocketAddr,
    state: web::Data<AppState>,
}

impl Application {
    /// Connects to `database` (libpq URL or keyword string), migrates, and binds `config.addr`.
    pub async fn build(
        config: Config,
        database: &str,
        jwt_secret: Vec<u8>,
    ) -> anyhow::Result<Self> {
        let config = Arc::new(config);
        // Before anything records a metric (idempotent: tests build many servers per process).
        crate::metrics::prometheus();
        let pg: tokio_postgres::Config = database.parse().context("parsing the database URL")?;
        let store = Store::with_limits(pg, config.db_limits())?;
        store.migrate().await.context("applying migrations")?;
        let mut search = Search::from_config(&config, &store).await?;
        if let Some(meili) = search.meili() {
            // The rooms get it from `Search::indexer()` (below, through the Hub).
            search.set_indexer(SearchIndexer::start(store.clone(), meili.clone()));
        }
        let presence = Presence::new(store.clone(), &config);
        let registry = presence.registry();
        let presence = presence.start();
        let hub = Hub::new(
            store.clone(),
            registry,
            search.indexer(),
            search.needs_outbox(),
            &config,
        )
        .start();
        let state = web::Data::new(AppState::new(StateParts {
            tokens: Tokens::new(
                &jwt_secret,
                config.access_token_ttl_secs,
                config.refresh_window_secs,
            ),
            passwords: Passwords::new(config.hash_concurrency)?,
            config: config.clone(),
            store,
            hub,
            presence,
            search,
        }));

        let app_state = state.clone();
        let max_body = config.max_body_bytes;
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(extract::json_config(max_body))
                .app_data(extract::path_config())
                .app_data(extract::query_config())
                .app_data(web::PayloadConfig::new(max_body))
                .wrap(
                    ErrorHandlers::new()
                        .handler(StatusCode::METHOD_NOT_ALLOWED, method_not_allowed),
                )
                .wrap(from_fn(http::ratelimit::middleware))
                .wrap(from_fn(http::stats::middleware))
                .wrap(from_fn(http::request_id::middleware))
                .configure(http::routes)
                .default_service(web::to(http::not_found))
        })
        .backlog(config.backlog)
        .max_connections(config.max_connections)
        .shutdown_timeout(10);
        if let Some(workers) = config.workers {
            server = server.workers(workers.max(1));
        }
        let server = server
            .bind(config.addr)
            .with_context(|| format!("binding {}", config.addr))?;
        let addr = *server.addrs().first().context("no bound address")?;
        state.loopback.set_addr(addr);
        http::ratelimit::spawn_eviction(&state, LIMITER_EVICTION_EVERY);
        let server = server.run();
        tracing::info!(%addr, "listening");
        Ok(Application {
            server,
            addr,
            state,
        })
    }

    /// The bound address (useful when binding port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// A handle to stop the server gracefully.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until the server is stopped (SIGINT/SIGTERM, or the handle).
    pub async fn run(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// 405 in the contract's envelope.
fn method_not_allowed<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let (req, _) = res.into_parts();
    let err = ApiError::MethodNotAllowed(format!(
        "Method {} is not allowed on {}",
        req.method(),
        req.path()
    ));
    let res: ServiceResponse<BoxBody> = ServiceResponse::new(req, err.error_response());
    Ok(ErrorHandlerResponse::Response(
        res.map_into_right_body::<B>()
            .map_body(|_, b: EitherBody<B, BoxBody>| b),
    ))
}

/// The JWT secret: configured, or generated once and kept in the data directory.
pub fn jwt_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    if let Some(s) = &config.jwt_secret {
        return Ok(s.as_bytes().to_vec());
    }
    let path = config.data_dir.join("jwt_secret");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_string();
        if existing.len() >= 32 {
            return Ok(existing.into_bytes());
        }
    }
    std::fs::create_dir_all(&config.data_dir)?;
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    std::fs::write(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    tracing::info!(path = %path.display(), "generated a JWT secret");
    Ok(secret.into_bytes())
}

/// Raises the open-file soft limit to the hard limit (many connections need many fds).
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
        },
        Ok((soft, _)) => tracing::info!(limit = soft, "open-file limit already at its hard limit"),
        Err(e) => tracing::warn!(error = %e, "could not read the open-file limit"),
    }
}

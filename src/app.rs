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
use crate::actors::search_watch::SearchWatch;
use crate::auth::{Passwords, Tokens};
use crate::config::Config;
use crate::http::error::ApiError;
use crate::http::{self, extract};
use crate::shutdown::{STOP_GRACE, StopHandle, serve_bounded};
use crate::state::{AppState, StateParts};
use crate::store::Store;
use crate::store::search::Search;

/// How often idle rate-limiter keys are dropped (and metric buffers drained).
const LIMITER_EVICTION_EVERY: Duration = Duration::from_secs(60);
/// How often resume checkpoints past their retention are deleted.
const CHECKPOINT_PRUNE_EVERY: Duration = Duration::from_secs(600);

/// A built server, bound and ready to run.
pub struct Application {
    server: Server,
    stop: StopHandle,
    /// The separate `/metrics` listener (`FECHATTER_METRICS_ADDR`), if configured.
    metrics_server: Option<Server>,
    addr: SocketAddr,
    state: web::Data<AppState>,
    /// Meilisearch only: restores an index lost with Meilisearch's data (held for its life).
    _search_watch: Option<actix::Addr<SearchWatch>>,
}

impl Application {
    /// Connects to `database` (libpq URL or keyword string), migrates, and binds `config.addr`.
    pub async fn build(
        config: Config,
        database: &str,
        jwt_secret: Vec<u8>,
    ) -> anyhow::Result<Self> {
        let config = Arc::new(config);
        crate::log_throttle::set_limit(config.log_repeat_per_10s);
        // Before anything records a metric (idempotent: tests build many servers per process).
        crate::metrics::prometheus();
        let pg: tokio_postgres::Config = database.parse().context("parsing the database URL")?;
        let store = Store::with_limits(pg, config.db_limits())?;
        store.migrate().await.context("applying migrations")?;
        let mut search = Search::from_config(&config, &store).await?;
        // Everything that can fail comes before the first actor starts: an actor dropped
        // unstarted (when `build` returns an error) would arm its timers outside the runtime
        // and panic. So the ports are taken, the proxies parsed and Redis reached first.
        let trusted = http::client_ip::TrustedProxies::parse(&config.trusted_proxies)
            .map_err(|e| anyhow::anyhow!("FECHATTER_TRUSTED_PROXIES: {e}"))?;
        let passwords = Passwords::with_nice(config.hash_concurrency, config.hash_nice)?;
        let listener = http::socket_opts::listen(config.addr, config.backlog)
            .with_context(|| format!("binding {}", config.addr))?;
        let metrics_listener = match config.metrics_addr {
            Some(metrics_addr) => Some(
                http::socket_opts::listen(metrics_addr, config.backlog)
                    .with_context(|| format!("binding FECHATTER_METRICS_ADDR {metrics_addr}"))?,
            ),
            None => None,
        };
        let cluster = crate::cluster::Cluster::connect(&config).await?;
        // Feeds the configured engine from the outbox; the rooms get its handle from
        // `Search::indexer()` (below, through the Hub).
        search.set_indexer(SearchIndexer::start(
            store.clone(),
            search.engine().clone(),
            search.indexer_bounds(),
        ));
        let search_watch = match search.engine() {
            crate::store::search::Engine::Meili(engine) => {
                let every = Duration::from_secs(config.meili_check_secs);
                SearchWatch::start(store.clone(), engine.clone(), every)
            }
            crate::store::search::Engine::Postgres => None,
        };
        let presence = Presence::new(
            store.clone(),
            &config,
            cluster.as_ref().map(|c| c.presence()),
        );
        let registry = presence.registry();
        let presence = presence.start();
        if let Some(cluster) = &cluster {
            // A password change on any node closes this node's sockets of that user.
            let registry = registry.clone();
            cluster.revocation().on_revoke(move |user_id, version| {
                crate::actors::session::revoke(&registry, user_id, version);
            });
        }
        let faults = Arc::new(crate::faults::Faults::from_config(&config));
        let hub = Hub::new(
            store.clone(),
            registry.clone(),
            search.indexer(),
            &config,
            faults.clone(),
            cluster.clone(),
        )
        .start();
        let state = web::Data::new(AppState::new(StateParts {
            tokens: Tokens::new(
                &jwt_secret,
                config.access_token_ttl_secs,
                config.refresh_window_secs,
            ),
            passwords,
            config: config.clone(),
            store,
            hub,
            presence,
            search,
            faults,
            registry,
            cluster,
        }));

        let app_state = state.clone();
        let max_body = config.max_body_bytes;
        let workers = config
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let budget = ConnectionBudget::from_fd_limit(&config, workers);
        let conn_limits = http::conn_limit::ConnLimits::new(
            config.max_connections_per_ip,
            budget.answered,
            trusted.clone(),
            state.faults.clone(),
        );
        let pending_bodies =
            http::body_timeout::PendingBodies(http::address_caps::AddressCaps::new(
                config.pending_bodies_per_ip,
                config.max_pending_bodies,
            ));
        let forwarded_requests =
            http::forwarded_cap::ForwardedRequests(http::address_caps::AddressCaps::new(
                config.max_requests_per_forwarded_client,
                usize::MAX,
            ));
        let trusted = web::Data::new(trusted);
        let socket_options = http::socket_opts::SocketOptions::from_config(&config);
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(trusted.clone())
                .app_data(pending_bodies.clone())
                .app_data(forwarded_requests.clone())
                .app_data(extract::json_config(max_body))
                .app_data(extract::path_config())
                .app_data(extract::query_config())
                .app_data(web::PayloadConfig::new(max_body))
                .wrap(
                    ErrorHandlers::new()
                        .handler(StatusCode::METHOD_NOT_ALLOWED, method_not_allowed),
                )
                .wrap(from_fn(http::metrics_guard::middleware))
                .wrap(from_fn(http::forwarded_cap::middleware))
                .wrap(from_fn(http::conn_limit::middleware))
                .wrap(from_fn(http::ratelimit::middleware))
                // Reads the body before the inner layers run: a stalled body holds only the
                // state of this layer and the two around it.
                .wrap(from_fn(http::body_timeout::middleware))
                // Made-up methods are answered before all of the above (no route serves them).
                .wrap(from_fn(http::unknown_method))
                .wrap(from_fn(http::stats::middleware))
                .wrap(from_fn(http::request_id::middleware))
                // Requests read from connections already refused at accept end here.
                .wrap(from_fn(http::conn_limit::drop_refused))
                .configure(http::routes)
                .default_service(web::to(http::not_found))
        })
        .on_connect(move |io, ext| {
            socket_options.apply(io);
            conn_limits.on_connect(io, ext)
        })
        // A peer's FIN ends its connection at once: an SSE stream's slot is freed when the
        // client leaves, not at the next heartbeat write.
        .h1_allow_half_closed(false)
        .backlog(config.backlog)
        .max_connections(budget.per_worker)
        .shutdown_timeout(config.shutdown_timeout_secs)
        .workers(workers);
        let _ = &mut server;
        let server = server
            .listen(listener)
            .with_context(|| format!("listening on {}", config.addr))?;
        let addr = *server.addrs().first().context("no bound address")?;
        let metrics_server = match metrics_listener {
            Some(listener) => {
                let metrics_addr = listener.local_addr().context("the metrics address")?;
                let metrics_state = state.clone();
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(metrics_state.clone())
                        .app_data(http::metrics_guard::MetricsListener)
                        .wrap(from_fn(http::metrics_guard::middleware))
                        .route("/metrics", web::get().to(http::admin::prometheus))
                })
                .workers(1)
                .listen(listener)
                .with_context(|| format!("listening on FECHATTER_METRICS_ADDR {metrics_addr}"))?
                .run();
                tracing::info!(%metrics_addr, "serving /metrics");
                Some(server)
            }
            None => None,
        };
        state.loopback.set_addr(addr);
        http::ratelimit::spawn_eviction(&state, LIMITER_EVICTION_EVERY);
        spawn_checkpoint_pruning(state.store.clone(), config.checkpoint_retention_hours);
        let server = server.run();
        tracing::info!(%addr, "listening");
        Ok(Application {
            stop: StopHandle::new(server.handle()),
            server,
            metrics_server,
            addr,
            state,
            _search_watch: search_watch,
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
    pub fn handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Serves until the server is stopped (SIGINT/SIGTERM, or the handle); in cluster mode the
    /// node then leaves the cluster. A stop is bounded (`shutdown.rs`): past the shutdown
    /// timeout and a grace, the workers are given up on, the shutdown work below still runs,
    /// and the overrun is returned as an error.
    pub async fn run(self) -> std::io::Result<()> {
        let metrics = self.metrics_server.map(|m| {
            let handle = m.handle();
            actix_web::rt::spawn(m);
            handle
        });
        let bound = Duration::from_secs(self.state.config.shutdown_timeout_secs) + STOP_GRACE;
        let result = serve_bounded(self.server, &self.stop, bound).await;
        if let Some(m) = metrics
            && tokio::time::timeout(bound, m.stop(true)).await.is_err()
        {
            tracing::warn!("the /metrics listener did not stop within the bound");
        }
        // The sessions are gone with the workers: who was online is known only to presence.
        let drain = self.state.presence.send(crate::actors::presence::Drain);
        let bound = Duration::from_secs(self.state.config.shutdown_timeout_secs);
        if tokio::time::timeout(bound, drain).await.is_err() {
            tracing::warn!(
                "last_seen of the users online not recorded within the shutdown timeout"
            );
        }
        if let Some(cluster) = &self.state.cluster {
            cluster.leave().await;
        }
        result
    }
}

/// How many client connections the descriptors allow: past `answered` (the open-file limit less
/// `FECHATTER_FD_HEADROOM`) new connections are answered 503 and closed; each worker stops
/// accepting at `per_worker`, which together stay under the limit by half the headroom, so
/// accepting never fails with EMFILE.
struct ConnectionBudget {
    answered: usize,
    per_worker: usize,
}

impl ConnectionBudget {
    fn from_fd_limit(config: &Config, workers: usize) -> Self {
        use nix::sys::resource::{Resource, getrlimit};
        let limit = getrlimit(Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft as usize)
            .unwrap_or(1024);
        let headroom = config.fd_headroom.min(limit / 2);
        let answered = limit.saturating_sub(headroom).max(1);
        let accepted = limit.saturating_sub(headroom / 2).max(workers);
        let per_worker = (accepted / workers).clamp(1, config.max_connections.max(1));
        tracing::info!(
            fd_limit = limit,
            answered,
            per_worker,
            workers,
            "connection budget"
        );
        ConnectionBudget {
            answered,
            per_worker,
        }
    }
}

/// 405 in the contract's envelope.
fn method_not_allowed<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let (req, original) = res.into_parts();
    let allow = original
        .headers()
        .get(actix_web::http::header::ALLOW)
        .cloned();
    let allowed = allow
        .as_ref()
        .and_then(|a| a.to_str().ok())
        .map(|a| format!("; allowed: {a}"))
        .unwrap_or_default();
    let err = ApiError::MethodNotAllowed(format!(
        "Method {} is not allowed on {}{allowed}",
        req.method(),
        req.path()
    ));
    let mut response = err.error_response();
    if let Some(allow) = allow {
        // Keep the `Allow` header the 405 fallback (`http::not_found`) set.
        response
            .headers_mut()
            .insert(actix_web::http::header::ALLOW, allow);
    }
    let res: ServiceResponse<BoxBody> = ServiceResponse::new(req, response);
    Ok(ErrorHandlerResponse::Response(
        res.map_into_right_body::<B>()
            .map_body(|_, b: EitherBody<B, BoxBody>| b),
    ))
}

/// The JWT secret: configured, or generated once and kept in the data directory.
/// Deletes resume checkpoints older than `hours`, in bounded batches, every
/// [`CHECKPOINT_PRUNE_EVERY`] (a failure is retried at the next turn).
fn spawn_checkpoint_pruning(store: Store, hours: i64) {
    actix_web::rt::spawn(async move {
        let mut every = tokio::time::interval(CHECKPOINT_PRUNE_EVERY);
        loop {
            every.tick().await;
            loop {
                match store.prune_checkpoints(hours, 10_000).await {
                    Ok(10_000) => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "pruning resume checkpoints failed");
                        break;
                    }
                }
            }
        }
    });
}

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

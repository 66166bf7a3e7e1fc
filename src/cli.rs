//! The commands of the `fechatter` binary.

use anyhow::Context;

use crate::app::{Application, jwt_secret, raise_fd_limit};
use crate::config::Config;
use crate::embedded_pg::{Durability, EmbeddedPostgres, default_layout};

/// The database to use: `DATABASE_URL`, or an embedded cluster started now (returned so the
/// caller stops it on shutdown).
fn database(config: &Config) -> anyhow::Result<(String, Option<EmbeddedPostgres>)> {
    if let Some(url) = &config.database_url {
        return Ok((url.clone(), None));
    }
    let (pgdata, socket_dir) = default_layout(&config.data_dir)?;
    let pg = EmbeddedPostgres::start(&pgdata, &socket_dir, 5432, Durability::Durable)?;
    ensure_database(&pg, "fechatter")?;
    Ok((pg.connection_string("fechatter"), Some(pg)))
}

/// Creates `name` in the embedded cluster if missing.
fn ensure_database(pg: &EmbeddedPostgres, name: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (client, conn) =
            tokio_postgres::connect(&pg.connection_string("postgres"), tokio_postgres::NoTls)
                .await
                .context("connecting to the embedded cluster")?;
        let task = tokio::spawn(conn);
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await?
            .is_some();
        if !exists {
            client
                .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                .await?;
        }
        drop(client);
        let _ = task.await;
        Ok(())
    })
}

/// `fechatter serve`
pub fn serve(config: Config) -> anyhow::Result<()> {
    crate::telemetry::init(&config.log_format);
    config.validate()?;
    raise_fd_limit();
    crate::memory_trim::spawn(config.malloc_trim_secs);
    let secret = jwt_secret(&config)?;
    let (database, embedded) = database(&config)?;
    let result = actix_web::rt::System::new().block_on(async move {
        let app = Application::build(config, &database, secret).await?;
        app.run().await.context("server")
    });
    if let Some(pg) = embedded {
        pg.stop();
    }
    result
}

/// `fechatter reindex`
pub fn reindex(config: Config) -> anyhow::Result<()> {
    crate::telemetry::init(&config.log_format);
    config.validate()?;
    let (database, embedded) = database(&config)?;
    let result = actix_web::rt::System::new()
        .block_on(async move { crate::store::search::reindex(&config, &database).await });
    if let Some(pg) = embedded {
        pg.stop();
    }
    result
}

//! Search: one interface, two engines (Meilisearch, PostgreSQL full-text), picked by configuration.

pub mod outbox;

use crate::config::Config;
use crate::store::Store;

/// The configured search engine. Cheap to clone.
#[derive(Clone)]
pub struct Search {}

impl Search {
    /// Whether message writes must record outbox rows (an external index is configured).
    pub fn needs_outbox(&self) -> bool {
        false
    }

    pub async fn from_config(_config: &Config, _store: &Store) -> anyhow::Result<Search> {
        Ok(Search {})
    }
}

/// Rebuilds the search index from PostgreSQL (`fechatter reindex`).
pub async fn reindex(_config: &Config, _database: &str) -> anyhow::Result<()> {
    anyhow::bail!("reindex is not implemented yet")
}

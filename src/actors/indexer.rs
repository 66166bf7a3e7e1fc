//! `SearchIndexer`: drains the search outbox into the external index, in batches.

/// Handle the chat rooms use to tell the indexer that new outbox rows are committed.
#[derive(Clone, Default)]
pub struct IndexerHandle {}

impl IndexerHandle {
    /// New outbox rows were committed: index them soon. Never blocks.
    pub fn notify(&self) {}
}

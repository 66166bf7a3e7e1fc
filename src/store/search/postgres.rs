//! The PostgreSQL engine: `websearch_to_tsquery('english', …)` over `message_search.content_tsv`
//! (GIN; the derived table the indexer keeps from the outbox, see `table`), scored `0.5 · ts_rank/(rank+1)` plus `0.5` when the query's words appear as
//! written, adjacent and unstemmed (the `content_words` column), so exact matches rank above
//! stemmed ones; highlighted by `ts_headline`. When full-text search finds nothing (CJK text the English parser keeps as one
//! token, prefixes, stop words), a substring search over the trigram index answers instead.
//!
//! Only the newest [`RANK_WINDOW`] matches are ranked and counted (`total` saturates there, as
//! Meilisearch's does); only the final page is highlighted.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::highlight::{self, POST, PRE};
use super::{MessageHit, MessageHits, MessageQuery};
use crate::store::{Store, StoreResult};

/// Messages at most this long are highlighted whole; longer ones as fragments around matches.
const HIGHLIGHT_ALL_MAX_CHARS: i32 = 400;
/// Matches ranked per search: the newest this many (so a word in half of a million messages
/// does not sort half a million rows); `total` saturates here, as with Meilisearch.
pub const RANK_WINDOW: i64 = 10_000;
/// Most query words the substring fallback uses.
const FALLBACK_MAX_TERMS: usize = 8;

/// Searches with full-text search, then with the substring fallback if that found nothing.
pub async fn search(store: &Store, q: &MessageQuery) -> StoreResult<MessageHits> {
    let words = QueryWords::parse(&q.text);
    let hits = full_text(store, q, &words).await?;
    if hits.total > 0 || words.positive.is_empty() {
        return Ok(hits);
    }
    substring(store, q, &words).await
}

/// The plain words of a websearch query: quotes dropped, `-word` exclusions and `or` set apart.
#[derive(Debug, Default, PartialEq)]
pub struct QueryWords {
    pub positive: Vec<String>,
    pub negative: Vec<String>,
}

impl QueryWords {
    pub fn parse(text: &str) -> Self {
        let mut words = QueryWords::default();
        for raw in text.split_whitespace() {
            let (negated, word) = match raw.strip_prefix('-') {
                Some(rest) if !rest.is_empty() => (true, rest),
                _ => (false, raw),
            };
            let word = word.replace('"', "");
            if word.is_empty() || (!negated && word.eq_ignore_ascii_case("or")) {
                continue;
            }
            if negated {
                words.negative.push(word);
            } else {
                words.positive.push(word);
            }
        }
        words
    }

    /// The positive words as one phrase (for `phraseto_tsquery('simple', …)` against the
    /// unstemmed `content_words`: the words exactly as written, adjacent and in order), or `None`.
    pub fn phrase(&self) -> Option<String> {
        (!self.positive.is_empty()).then(|| self.positive.join(" "))
    }
}

/// `%s%` for ILIKE, with LIKE's wildcards in `s` escaped.
pub fn like_pattern(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('%');
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The optional filters as SQL conditions on `m`, numbering parameters from `next`.
struct Filters<'a> {
    sql: String,
    params: Vec<&'a (dyn ToSql + Sync)>,
}

fn filters<'a>(q: &'a MessageQuery, mut next: usize) -> Filters<'a> {
    let mut sql = String::new();
    let mut params: Vec<&'a (dyn ToSql + Sync)> = Vec::new();
    if let Some(senders) = &q.sender_ids {
        sql.push_str(&format!(" AND m.sender_id = ANY(${next})"));
        params.push(senders);
        next += 1;
    }
    if let Some(from) = &q.from {
        sql.push_str(&format!(" AND m.created_at >= ${next}"));
        params.push(from);
        next += 1;
    }
    if let Some(until) = &q.until {
        sql.push_str(&format!(" AND m.created_at < ${next}"));
        params.push(until);
    }
    Filters { sql, params }
}

/// The page of a ranked `hits` CTE (defined by `ctes`) joined with chat and sender names; `extra` selects the
/// highlight source as the ninth column. A hit whose message was deleted or edited since the
/// indexer last ran is left out (the derived table lags the commit): search never shows text a
/// message no longer has, as the Meilisearch engine re-checks its hits too.
fn page_sql(ctes: &str, limit_param: usize, extra: &str) -> String {
    format!(
        "WITH {ctes}, \
         page AS (SELECT h.*, count(*) OVER () AS total FROM hits h \
                  ORDER BY h.score DESC, h.created_at DESC, h.id DESC \
                  LIMIT ${limit_param} OFFSET ${offset}) \
         SELECT p.id, p.chat_id, c.name, p.sender_id, u.username, p.created_at, p.score, p.total, {extra} \
         FROM page p JOIN message_search m ON m.message_id = p.id JOIN chats c ON c.id = p.chat_id \
         JOIN users u ON u.id = p.sender_id \
         JOIN messages live ON live.id = p.id AND live.deleted_at IS NULL \
                           AND live.content = m.content \
         ORDER BY p.score DESC, p.created_at DESC, p.id DESC",
        offset = limit_param + 1,
    )
}

async fn full_text(
    store: &Store,
    q: &MessageQuery,
    words: &QueryWords,
) -> StoreResult<MessageHits> {
    let client = store.client().await?;
    // Parse the query once, up front: the search then carries the tsqueries as constants, so
    // each row tests a ready tsquery and the planner sees how common the words are.
    let parse = client
        .prepare_cached(
            "SELECT websearch_to_tsquery('english', $1)::text, \
                    nullif(phraseto_tsquery('simple', $2)::text, '')",
        )
        .await?;
    let parsed = client
        .query_one(&parse, &[&q.text, &words.phrase()])
        .await?;
    let tsquery: String = parsed.get(0);
    let exact: Option<String> = parsed.get(1);
    if tsquery.is_empty() {
        // Only stop words or punctuation: nothing for full-text search to match.
        return Ok(MessageHits::default());
    }
    let f = filters(q, 4);
    let limit_param = 4 + f.params.len();
    // Only the newest RANK_WINDOW matches are ranked: a top-N by recency, which for a common
    // word an index on created_at answers without visiting every match. The sort carries only
    // narrow rows (no join back to the table, which the planner may turn into a full scan).
    let ctes = format!(
        "hits AS (SELECT m.message_id AS id, m.chat_id, m.sender_id, m.created_at, \
                         (0.5 * ts_rank(m.content_tsv, $1::text::tsquery, 32) \
                          + CASE WHEN m.content_words @@ $3::text::tsquery THEN 0.5 ELSE 0 END \
                         )::float8 AS score \
                  FROM message_search m \
                  WHERE m.content_tsv @@ $1::text::tsquery AND m.chat_id = ANY($2){} \
                  ORDER BY m.created_at DESC, m.message_id DESC LIMIT {RANK_WINDOW})",
        f.sql
    );
    let headline = format!(
        "ts_headline('english', m.content, $1::text::tsquery, \
           CASE WHEN length(m.content) <= {HIGHLIGHT_ALL_MAX_CHARS} \
                THEN 'HighlightAll=true, StartSel=\"{PRE}\", StopSel=\"{POST}\"' \
                ELSE 'MaxWords=40, MinWords=15, MaxFragments=2, FragmentDelimiter=\" … \", \
                      StartSel=\"{PRE}\", StopSel=\"{POST}\"' END)"
    );
    let sql = page_sql(&ctes, limit_param, &headline);
    let (limit, offset) = (q.limit, q.offset());
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&tsquery, &q.chat_ids, &exact];
    params.extend(f.params);
    params.push(&limit);
    params.push(&offset);
    // Not a cached statement: each search is planned for its own words (a generic plan cannot
    // tell a word in every message from a word in three).
    let rows = client.query(sql.as_str(), &params).await?;
    let mut hits = MessageHits {
        total: rows.first().map(|r| r.get(7)).unwrap_or(0),
        hits: rows.iter().map(|r| hit(r, |s| s)).collect(),
    };
    if rows.is_empty() && q.page > 1 {
        hits.total = count_full_text(&client, q, &tsquery).await?;
    }
    Ok(hits)
}

/// The number of full-text matches, at most RANK_WINDOW (asked only when a page past the end
/// came back empty).
async fn count_full_text(
    client: &deadpool_postgres::Client,
    q: &MessageQuery,
    tsquery: &String,
) -> StoreResult<i64> {
    let f = filters(q, 3);
    let sql = format!(
        "SELECT count(*) FROM (SELECT 1 FROM message_search m \
         WHERE m.content_tsv @@ $1::text::tsquery AND m.chat_id = ANY($2){} \
         LIMIT {RANK_WINDOW}) s",
        f.sql
    );
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![tsquery, &q.chat_ids];
    params.extend(f.params);
    Ok(client.query_one(sql.as_str(), &params).await?.get(0))
}

/// Case-insensitive substring search: every positive word must occur, no negative one may.
/// Scored `0.25`, `+0.25` when the words occur together, `+0.5` when as whole words.
async fn substring(
    store: &Store,
    q: &MessageQuery,
    words: &QueryWords,
) -> StoreResult<MessageHits> {
    let positive: Vec<String> = words
        .positive
        .iter()
        .take(FALLBACK_MAX_TERMS)
        .map(|w| like_pattern(w))
        .collect();
    let negative: Vec<String> = words
        .negative
        .iter()
        .take(FALLBACK_MAX_TERMS)
        .map(|w| like_pattern(w))
        .collect();
    let phrase = like_pattern(&words.positive.join(" "));
    let exact = words.phrase();
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&q.chat_ids, &phrase, &exact];
    let mut conditions = String::new();
    for p in &positive {
        params.push(p);
        conditions.push_str(&format!(" AND m.content ILIKE ${}", params.len()));
    }
    for n in &negative {
        params.push(n);
        conditions.push_str(&format!(" AND m.content NOT ILIKE ${}", params.len()));
    }
    let f = filters(q, params.len() + 1);
    params.extend(f.params);
    let ctes = format!(
        "hits AS (SELECT m.message_id AS id, m.chat_id, m.sender_id, m.created_at, \
                         (0.25 + CASE WHEN m.content ILIKE $2 THEN 0.25 ELSE 0 END \
                               + CASE WHEN m.content_words @@ phraseto_tsquery('simple', $3) \
                                      THEN 0.5 ELSE 0 END)::float8 AS score \
                  FROM message_search m \
                  WHERE m.chat_id = ANY($1){conditions}{} \
                  ORDER BY m.created_at DESC, m.message_id DESC LIMIT {RANK_WINDOW})",
        f.sql
    );
    let sql = page_sql(&ctes, params.len() + 1, "m.content");
    let (limit, offset) = (q.limit, q.offset());
    params.push(&limit);
    params.push(&offset);
    let client = store.client().await?;
    // Planned per search, like full-text search (how common the substring is decides the plan).
    let rows = client.query(sql.as_str(), &params).await?;
    let terms = &words.positive;
    let mut hits = MessageHits {
        total: rows.first().map(|r| r.get(7)).unwrap_or(0),
        hits: rows
            .iter()
            .map(|r| hit(r, |s| highlight::mark_terms(&s, terms)))
            .collect(),
    };
    if rows.is_empty() && q.page > 1 {
        // Past the last page: the first page of one result carries the count.
        let probe = MessageQuery {
            page: 1,
            limit: 1,
            ..q.clone()
        };
        hits.total = Box::pin(substring(store, &probe, words)).await?.total;
    }
    Ok(hits)
}

/// A row of [`page_sql`] as a hit; `mark` turns column 8 into sentinel-marked text.
fn hit(r: &Row, mark: impl Fn(String) -> String) -> MessageHit {
    let created_at: DateTime<Utc> = r.get(5);
    MessageHit {
        message_id: r.get(0),
        chat_id: r.get(1),
        chat_name: r.get(2),
        sender_id: r.get(3),
        sender_username: r.get(4),
        created_at,
        score: r.get::<_, f64>(6).clamp(0.0, 1.0),
        content: highlight::render(&mark(r.get(8))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_websearch_words() {
        let w = QueryWords::parse("\"important meeting\" or -lunch  c++");
        assert_eq!(w.positive, vec!["important", "meeting", "c++"]);
        assert_eq!(w.negative, vec!["lunch"]);
        assert_eq!(w.phrase().as_deref(), Some("important meeting c++"));
        assert_eq!(QueryWords::parse("-x").phrase(), None);
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("50%_a\\"), "%50\\%\\_a\\\\%");
    }
}

//! The population a scenario runs with — users (with tokens), one workspace, its chat rooms and
//! who is in which — created through the public API, or loaded from a `--reuse` file.
//!
//! Creation: the owner registers, creates the workspace, its rooms (batched, `POST /api/batch`)
//! and invites with up to 1,000 uses each (batched); then every user registers (or logs in, when
//! the email exists), accepts an invite and joins its rooms (batched when more than one), a
//! bounded number of users at a time. Registration hashes a password on the server (Argon2,
//! ~30 ms of CPU), so it dominates: reuse the set-up between runs.

use std::path::Path;

use anyhow::{Context, bail};
use futures_util::{StreamExt, TryStreamExt};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::api::Api;
use super::progress;

/// Password of every user the tool creates.
pub const PASSWORD: &str = "load-password-1";
/// Most operations the tool puts in one batch (the server's default maximum).
const BATCH_OPS: usize = 50;
/// Uses of one invite (the server's maximum).
const INVITE_USES: usize = 1000;

/// How many users and rooms, and how many rooms each user is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    pub users: usize,
    pub rooms: usize,
    pub rooms_per_user: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub token: String,
}

/// Everything a scenario needs to know about its users and rooms.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Population {
    pub server: String,
    pub prefix: String,
    pub shape: Shape,
    /// Owns the workspace and every room (and is a member of each).
    pub owner: User,
    pub workspace_id: i64,
    pub rooms: Vec<i64>,
    pub users: Vec<User>,
}

impl Shape {
    /// Indices of the rooms user `i` is in: `rooms_per_user` consecutive rooms from `i`.
    pub fn rooms_of(&self, i: usize) -> Vec<usize> {
        let rooms = self.rooms.max(1);
        (0..self.rooms_per_user.clamp(1, rooms))
            .map(|k| (i + k) % rooms)
            .collect()
    }
}

impl Population {
    /// Chat ids of user `i`'s rooms.
    pub fn rooms_of(&self, i: usize) -> Vec<i64> {
        self.shape
            .rooms_of(i)
            .into_iter()
            .map(|r| self.rooms[r])
            .collect()
    }
}

/// Options of the set-up phase.
pub struct SetupOptions<'a> {
    pub api: &'a Api,
    pub server: &'a str,
    pub prefix: Option<&'a str>,
    pub reuse: Option<&'a Path>,
    pub concurrency: usize,
    pub quiet: bool,
}

/// Loads the population from `--reuse` when it matches `shape` and the server still accepts
/// its owner's token; otherwise creates it (and saves it to `--reuse`).
pub async fn population(opts: &SetupOptions<'_>, shape: Shape) -> anyhow::Result<Population> {
    if let Some(path) = opts.reuse.filter(|p| p.exists()) {
        match load(path) {
            Ok(p) if p.shape == shape && p.server == opts.server => {
                let me = opts
                    .api
                    .call(Method::GET, "/api/users/me", Some(&p.owner.token), None)
                    .await
                    .context("checking the reused set-up")?;
                if me.status == 200 {
                    eprintln!("reusing the set-up in {}", path.display());
                    return Ok(p);
                }
                eprintln!(
                    "{}: the server no longer accepts its tokens (HTTP {}); creating a new set-up",
                    path.display(),
                    me.status
                );
            }
            Ok(p) => eprintln!(
                "{}: made for {:?} on {}, not {:?} on {}; creating a new set-up",
                path.display(),
                p.shape,
                p.server,
                shape,
                opts.server
            ),
            Err(e) => eprintln!("{}: {e:#}; creating a new set-up", path.display()),
        }
    }
    let prefix = opts
        .prefix
        .map(str::to_owned)
        .unwrap_or_else(|| format!("load{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    let p = create(opts, shape, &prefix).await?;
    if let Some(path) = opts.reuse {
        let text = serde_json::to_string(&p)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(p)
}

fn load(path: &Path) -> anyhow::Result<Population> {
    let text = std::fs::read_to_string(path)?;
    Ok(serde_json::from_str(&text)?)
}

fn email(prefix: &str, who: &str) -> String {
    format!("{prefix}-{who}@load.example")
}

/// Registers a user, or logs in when the email is taken (a rerun with the same prefix).
async fn register(api: &Api, email: &str, username: &str) -> anyhow::Result<User> {
    let body = json!({"email": email, "username": username, "password": PASSWORD});
    let reply = api
        .expect(
            Method::POST,
            "/api/auth/register",
            None,
            Some(&body),
            &[201, 409],
        )
        .await?;
    let reply = if reply.status == 409 {
        let login = json!({"email": email, "password": PASSWORD});
        api.expect(Method::POST, "/api/auth/login", None, Some(&login), &[200])
            .await?
    } else {
        reply
    };
    Ok(User {
        id: reply.body["user"]["id"].as_i64().context("user id")?,
        email: email.to_string(),
        token: reply.body["token"].as_str().context("token")?.to_string(),
    })
}

/// Runs `ops` as `token` in batches; returns the body of each, failing on any other status.
async fn batched(
    api: &Api,
    token: &str,
    ops: Vec<Value>,
    ok: &[u16],
) -> anyhow::Result<Vec<Value>> {
    let mut bodies = Vec::with_capacity(ops.len());
    for chunk in ops.chunks(BATCH_OPS) {
        for (op, reply) in chunk.iter().zip(api.batch(token, chunk.to_vec()).await?) {
            if !ok.contains(&reply.status) {
                bail!(
                    "{} {}: HTTP {} {}",
                    op["method"],
                    op["path"],
                    reply.status,
                    reply.body
                );
            }
            bodies.push(reply.body);
        }
    }
    Ok(bodies)
}

async fn create(opts: &SetupOptions<'_>, shape: Shape, prefix: &str) -> anyhow::Result<Population> {
    let api = opts.api;
    if shape.rooms == 0 {
        bail!("at least one room is needed");
    }
    let owner = register(api, &email(prefix, "owner"), "load_owner").await?;
    let workspace = api
        .expect(
            Method::POST,
            "/api/workspaces",
            Some(&owner.token),
            Some(&json!({"name": format!("load {prefix}")})),
            &[201],
        )
        .await?;
    let workspace_id = workspace.body["id"].as_i64().context("workspace id")?;

    let room_ops = (0..shape.rooms)
        .map(|r| {
            json!({"method": "POST", "path": "/api/chats", "body": {
                "workspace_id": workspace_id, "name": format!("room-{r}"), "type": "channel"}})
        })
        .collect();
    let rooms = batched(api, &owner.token, room_ops, &[201])
        .await
        .context("creating rooms")?
        .iter()
        .map(|b| b["id"].as_i64().context("chat id"))
        .collect::<anyhow::Result<Vec<i64>>>()?;

    let invite_ops = (0..shape.users.div_ceil(INVITE_USES))
        .map(|_| {
            json!({"method": "POST", "path": format!("/api/workspaces/{workspace_id}/invites"),
                "body": {"role": "member", "expires_in_days": 30, "max_uses": INVITE_USES}})
        })
        .collect();
    let invites = batched(api, &owner.token, invite_ops, &[201])
        .await
        .context("creating invites")?
        .iter()
        .map(|b| {
            b["invite_code"]
                .as_str()
                .map(str::to_owned)
                .context("invite code")
        })
        .collect::<anyhow::Result<Vec<String>>>()?;

    let bar = progress::bar(opts.quiet, shape.users as u64, "users");
    let rooms_ref = &rooms;
    let invites_ref = &invites;
    let bar_ref = &bar;
    let mut users: Vec<(usize, User)> = futures_util::stream::iter(0..shape.users)
        .map(|i| async move {
            let user = register(api, &email(prefix, &i.to_string()), &format!("load_{i}")).await?;
            let code = &invites_ref[i / INVITE_USES];
            api.expect(
                Method::POST,
                &format!("/api/invites/{code}/accept"),
                Some(&user.token),
                Some(&json!({})),
                &[200],
            )
            .await?;
            let joins: Vec<Value> = shape
                .rooms_of(i)
                .into_iter()
                .map(|r| json!({"method": "POST", "path": format!("/api/chats/{}/join", rooms_ref[r])}))
                .collect();
            if let [join] = joins.as_slice() {
                let path = join["path"].as_str().unwrap_or_default();
                api.expect(Method::POST, path, Some(&user.token), Some(&json!({})), &[200])
                    .await?;
            } else {
                batched(api, &user.token, joins, &[200]).await?;
            }
            bar_ref.inc(1);
            Ok::<_, anyhow::Error>((i, user))
        })
        .buffer_unordered(opts.concurrency.max(1))
        .try_collect()
        .await
        .context("creating users")?;
    bar.finish_and_clear();
    users.sort_by_key(|(i, _)| *i);
    Ok(Population {
        server: opts.server.to_string(),
        prefix: prefix.to_string(),
        shape,
        owner,
        workspace_id,
        rooms,
        users: users.into_iter().map(|(_, u)| u).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_spread_over_rooms() {
        let shape = Shape {
            users: 10,
            rooms: 4,
            rooms_per_user: 2,
        };
        assert_eq!(shape.rooms_of(0), [0, 1]);
        assert_eq!(shape.rooms_of(3), [3, 0]);
        let one = Shape {
            rooms_per_user: 9,
            ..shape
        };
        assert_eq!(one.rooms_of(1).len(), 4);
    }
}

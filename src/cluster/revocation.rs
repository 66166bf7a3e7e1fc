//! Revocation across nodes: after a password change every node closes the user's sockets, told
//! over a pub/sub channel. (That older tokens are refused at once is `AppState::token_version`'s
//! job: in cluster mode it reads the version from PostgreSQL on every authentication, so no node
//! keeps a copy that could accept an older token.)

use std::sync::Arc;

use parking_lot::Mutex;

use super::Keys;
use super::broker::{Broker, Delivery, Subscription};

/// What the node does when a user's tokens are revoked (close their sockets here).
pub type RevokeHandler = Arc<dyn Fn(i64, i32) + Send + Sync>;

pub struct Revocation {
    keys: Keys,
    handler: Arc<Mutex<Option<RevokeHandler>>>,
    subscription: Mutex<Option<Subscription>>,
}

impl Revocation {
    pub fn new(keys: Keys) -> Self {
        Revocation {
            keys,
            handler: Arc::new(Mutex::new(None)),
            subscription: Mutex::new(None),
        }
    }

    /// Subscribes to revocations (once, at start-up).
    pub fn listen(&self, broker: &Broker) {
        let handler = self.handler.clone();
        let sub = broker.subscribe(self.keys.revoke_channel(), move |d| {
            let Delivery::Message(bytes) = d else { return };
            let Some((user, version)) = parse(&bytes) else {
                return;
            };
            let h = handler.lock().clone();
            if let Some(h) = h {
                h(user, version);
            }
        });
        *self.subscription.lock() = Some(sub);
    }

    /// Sets what a revocation does on this node (the actors' "close this user's connections").
    /// Called for revocations from every node, this one included.
    /// The handler gets the user and the new token version (older tokens are revoked).
    pub fn on_revoke(&self, handler: impl Fn(i64, i32) + Send + Sync + 'static) {
        *self.handler.lock() = Some(Arc::new(handler));
    }

    /// Tells every node (this one too) that `user_id`'s tokens older than `version` are revoked.
    pub fn revoke(&self, broker: &Broker, user_id: i64, version: i32) {
        broker.publish(
            self.keys.revoke_channel(),
            format!("{user_id}:{version}").into(),
        );
    }
}

/// `"<user id>:<version>"` → (user id, version).
fn parse(bytes: &[u8]) -> Option<(i64, i32)> {
    let (user, version) = std::str::from_utf8(bytes).ok()?.split_once(':')?;
    Some((user.parse().ok()?, version.parse().ok()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_the_payload() {
        assert_eq!(super::parse(b"42:3"), Some((42, 3)));
        assert_eq!(super::parse(b"x:3"), None);
        assert_eq!(super::parse(&[0xff]), None);
    }
}

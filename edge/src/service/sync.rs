//! What the sync worker needs from the store: this node's facts as sync facts, and
//! the durable record of what the hub acknowledged.

use patron_protocol::Origin;
use patron_protocol::hub::LedgerEntry;
use patron_sync::session::Fact;
use uuid::Uuid;

use super::{Edge, EdgeError};
use crate::store::{self, StoreError, facts};

/// `meta` key: highest own sequence the hub acknowledged (`<incarnation>:<seq>`).
const ACKED_KEY: &str = "hub_acked";

fn uuid_str(b: &[u8; 16]) -> String {
    Uuid::from_bytes(*b).to_string()
}

/// The wire form of one of this node's facts.
pub fn to_wire(origin: &Origin, f: facts::SyncFact) -> Result<Fact, EdgeError> {
    let entry = LedgerEntry {
        kind: f.kind,
        at: f.at,
        member: f.member.as_ref().map(uuid_str),
        txn: uuid_str(&f.txn),
        earn: f.earn,
        expires_at: f.expires_at,
        available_at: f.available_at,
        spend: f.spend,
        reverse: f.reverse,
        reverse_lot: f.reverse_lot.as_ref().map(uuid_str),
        qual_spend: f.qual_spend,
        qual_at: f.qual_at,
        body: f.body,
    };
    Ok(Fact {
        origin: origin.clone(),
        seq: f.seq.max(0) as u64,
        body: serde_json::to_string(&entry).map_err(|e| StoreError::Corrupt(e.to_string()))?,
    })
}

impl Edge {
    /// This database's origin as sync names it.
    pub fn sync_origin(&self) -> Origin {
        Origin {
            node: self.store.origin.node.clone(),
            incarnation: self.store.origin.incarnation,
        }
    }

    /// The highest sequence this node has written.
    pub async fn last_own_seq(&self) -> Result<i64, EdgeError> {
        let origin = self.store.origin.id;
        self.store
            .readers
            .read(move |c| Ok::<_, EdgeError>(facts::last_seq(c, origin)?))
            .await
    }

    /// Up to `max` of this node's facts after `after`, in wire form.
    pub async fn outbox(&self, after: i64, max: usize) -> Result<Vec<Fact>, EdgeError> {
        let origin_id = self.store.origin.id;
        let origin = self.sync_origin();
        self.store
            .readers
            .read(move |c| {
                facts::for_sync(c, origin_id, after, max)
                    .map_err(StoreError::from)?
                    .into_iter()
                    .map(|f| to_wire(&origin, f))
                    .collect::<Result<Vec<_>, EdgeError>>()
            })
            .await
    }

    /// When fact `seq` of this node was written (the watchdog's age of the oldest
    /// unacknowledged fact).
    pub async fn own_fact_at(&self, seq: i64) -> Result<Option<i64>, EdgeError> {
        let origin = self.store.origin.id;
        self.store
            .readers
            .read(move |c| Ok::<_, EdgeError>(facts::at_of(c, origin, seq)?))
            .await
    }

    /// The highest own sequence the hub acknowledged, for this incarnation (0 if none).
    pub async fn hub_acked(&self) -> Result<i64, EdgeError> {
        let inc = self.store.origin.incarnation.to_string();
        self.store
            .readers
            .read(move |c| {
                let v = store::meta_get(c, ACKED_KEY)?;
                Ok::<_, EdgeError>(
                    v.and_then(|v| {
                        let (i, s) = v.split_once(':')?;
                        (i == inc).then(|| s.parse().ok()).flatten()
                    })
                    .unwrap_or(0),
                )
            })
            .await
    }

    /// Records durably that the hub holds this node's facts up to `seq`.
    pub async fn set_hub_acked(&self, seq: i64) -> Result<(), EdgeError> {
        let value = format!("{}:{seq}", self.store.origin.incarnation);
        self.store
            .writer
            .write(move |ctx| Ok::<_, EdgeError>(store::meta_set(ctx.conn, ACKED_KEY, &value)?))
            .await
    }
}

//! Chain-wide stock of points-catalogue items, as the hub serves it: a store about to
//! give catalogue items with a `stock_chain` reserves their units here before the sale
//! queues, and the hub counts the units every store's sales gave and those it reserved
//! for sales on their way ([`patron_domain::stock`] holds the rules; storage counts
//! and holds in the authority's transaction, so two stores reserving the last unit at
//! once never both get it).

use patron_domain::stock::{MAX_STOCK, allows, left};
use patron_protocol::hub::{StockLeft, StockRelease, StockRequest, StockResponse};

use crate::authority::HOLD_MS;
use crate::service::{Hub, HubError};
use crate::store::StoreRow;

/// Most items one reservation names (a basket's lines at most).
const MAX_ITEMS: usize = 200;

/// Most units of one item one sale may take.
const MAX_UNITS: i64 = 9_999;

impl Hub {
    /// `POST /v1/stock/reserve`: reserves every item's units if each stays within its
    /// chain-wide stock (the units given, and those reserved for other sales, taken
    /// off), or none. A retried reservation of the same sale by the same store is
    /// decided again in its place; another store naming that sale is refused.
    pub fn reserve_stock(
        &self,
        store: &StoreRow,
        req: &StockRequest,
    ) -> Result<StockResponse, HubError> {
        let txn = uuid::Uuid::parse_str(&req.txn)
            .map_err(|_| HubError::Invalid("txn is not a UUID".into()))?
            .to_string();
        check_items(req)?;
        let now = self.now();
        let mut answer = None;
        self.store().authority_tx(&mut |tx| {
            if let Some(holder) = tx.stock_holder(&txn, now)?
                && holder != store.store_id
            {
                return Err(crate::store::StoreError::Conflict(
                    "the sale is reserved for another store",
                ));
            }
            let mut granted = true;
            let mut out = Vec::with_capacity(req.items.len());
            for it in &req.items {
                let given = tx.stock_given(&it.sku)?;
                let held = tx.stock_held(&it.sku, now, &txn)?;
                granted &= allows(it.stock, given, held, it.units);
                out.push(StockLeft {
                    sku: it.sku.clone(),
                    left: left(it.stock, given, held),
                });
            }
            if granted {
                let items: Vec<(String, i64)> =
                    req.items.iter().map(|i| (i.sku.clone(), i.units)).collect();
                tx.hold_stock(
                    &txn,
                    &items,
                    &store.store_id,
                    now,
                    now.saturating_add(HOLD_MS),
                )?;
            }
            answer = Some(StockResponse { granted, left: out });
            Ok(())
        })?;
        let answer = answer.ok_or_else(|| {
            HubError::Store(crate::store::StoreError::Batch(
                "the stock transaction did not run".into(),
            ))
        })?;
        tracing::debug!(store = %store.store_id, granted = answer.granted, "stock");
        Ok(answer)
    }

    /// `POST /v1/stock/release`: the store did not record the sale it reserved for.
    /// Only its own reservation goes.
    pub fn release_stock(&self, store: &StoreRow, req: &StockRelease) -> Result<bool, HubError> {
        let txn = uuid::Uuid::parse_str(&req.txn)
            .map_err(|_| HubError::Invalid("txn is not a UUID".into()))?
            .to_string();
        let mut released = false;
        self.store().authority_tx(&mut |tx| {
            released = tx.release_stock(&txn, &store.store_id)?;
            Ok(())
        })?;
        Ok(released)
    }
}

/// 1–[`MAX_ITEMS`] items of distinct SKUs (1–64 characters), each 1–[`MAX_UNITS`]
/// units of a stock up to [`MAX_STOCK`].
fn check_items(req: &StockRequest) -> Result<(), HubError> {
    if req.items.is_empty() || req.items.len() > MAX_ITEMS {
        return Err(HubError::Invalid(format!(
            "items: 1-{MAX_ITEMS} catalogue items"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for it in &req.items {
        if it.sku.is_empty() || it.sku.len() > 64 || !seen.insert(it.sku.as_str()) {
            return Err(HubError::Invalid(
                "each item names a distinct sku of 1-64 characters".into(),
            ));
        }
        if !(1..=MAX_UNITS).contains(&it.units) || it.stock > MAX_STOCK {
            return Err(HubError::Invalid(format!(
                "units 1-{MAX_UNITS} and a stock of at most {MAX_STOCK}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use patron_protocol::hub::StockItem;

    use super::*;
    use crate::testing::TestHub;

    const T0: i64 = 1_764_000_000_000;
    const MEMBER: &str = "0190a000-0000-7000-8000-000000000001";

    fn txn(n: u128) -> String {
        uuid::Uuid::from_u128(0x0190_a000_0000_7000_8000_0000_0000_0000 + n).to_string()
    }

    fn ask(n: u128, units: i64) -> StockRequest {
        StockRequest {
            txn: txn(n),
            items: vec![StockItem {
                sku: "UMB".into(),
                units,
                stock: 5,
            }],
        }
    }

    fn reserve(t: &TestHub, i: usize, req: &StockRequest) -> StockResponse {
        t.hub
            .reserve_stock(&t.rows[i], req)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sale `n` of `MEMBER` giving `units` umbrellas (and a line of goods).
    fn sale(t: &TestHub, n: u128, units: i64) -> String {
        serde_json::json!({
            "kind": "purchase", "at": t.time(), "member": MEMBER, "txn": txn(n),
            "spend": 500 * units,
            "body": {"receipt_id": format!("R{n}"), "subtotal": 1_990, "total": 1_990,
                     "catalogue": {"cash": 990 * units, "points": 500 * units},
                     "lines": [{"sku": "A", "qty": 9, "unit_price": 100},
                               {"sku": "UMB", "qty": units, "unit_price": 990, "catalogue": true}]},
        })
        .to_string()
    }

    #[test]
    fn units_are_reserved_until_the_sale_arrives_and_never_past_the_stock() {
        let t = TestHub::new(T0, &["S001", "S002"]);
        t.share_member(MEMBER);
        let a = reserve(&t, 0, &ask(1, 3));
        assert!(a.granted);
        assert_eq!(a.left[0].left, 5);
        let b = reserve(&t, 1, &ask(2, 3));
        assert_eq!(
            (b.granted, b.left[0].left),
            (false, 2),
            "3 are held for S001"
        );
        assert!(reserve(&t, 1, &ask(2, 2)).granted);
        // S001 retries its reservation: decided in its own place, not held twice.
        assert!(reserve(&t, 0, &ask(1, 3)).granted);
        assert!(matches!(
            t.hub.reserve_stock(&t.rows[1], &ask(1, 1)),
            Err(HubError::Invalid(_))
        ));
        // S001's sale arrives giving 3: counted once, as given, not as given and held.
        t.push_fact(0, sale(&t, 1, 3));
        let c = reserve(&t, 0, &ask(3, 1));
        assert_eq!((c.granted, c.left[0].left), (false, 0));
        // S002 did not record its sale: its 2 are free again, and only it frees them.
        let release = StockRelease { txn: txn(2) };
        assert_eq!(t.hub.release_stock(&t.rows[0], &release).ok(), Some(false));
        assert_eq!(t.hub.release_stock(&t.rows[1], &release).ok(), Some(true));
        assert_eq!(reserve(&t, 1, &ask(4, 2)).left[0].left, 2);
        // A reservation whose sale never comes lapses.
        t.set_time(T0 + HOLD_MS + 1);
        assert_eq!(reserve(&t, 1, &ask(5, 1)).left[0].left, 2);
        // The counts rebuilt from the facts are the same.
        t.hub
            .rebuild_projections()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reserve(&t, 1, &ask(5, 1)).left[0].left, 2);
    }

    #[test]
    fn bad_reservations_are_refused() {
        let t = TestHub::new(T0, &["S001"]);
        let two = StockItem {
            sku: "UMB".into(),
            units: 1,
            stock: 5,
        };
        for req in [
            StockRequest {
                txn: "x".into(),
                ..ask(1, 1)
            },
            ask(1, 0),
            ask(1, MAX_UNITS + 1),
            StockRequest {
                items: vec![],
                ..ask(1, 1)
            },
            StockRequest {
                items: vec![two.clone(), two],
                ..ask(1, 1)
            },
        ] {
            assert!(
                matches!(
                    t.hub.reserve_stock(&t.rows[0], &req),
                    Err(HubError::Invalid(_))
                ),
                "{req:?}"
            );
        }
    }

    /// 32 reservations of one unit from two stores at once: exactly the stock granted.
    #[test]
    fn simultaneous_reservations_never_pass_the_stock() {
        let t = TestHub::new(T0, &["S001", "S002"]);
        let granted = std::sync::atomic::AtomicI64::new(0);
        std::thread::scope(|s| {
            for lane in 0..8u128 {
                let (t, granted) = (&t, &granted);
                s.spawn(move || {
                    for k in 0..4u128 {
                        if reserve(t, (lane % 2) as usize, &ask(100 + lane * 4 + k, 1)).granted {
                            granted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(granted.into_inner(), 5);
    }
}

//! Catalogue items with a chain-wide stock (`stock_chain`, `patron_domain::stock`): the
//! units a sale gives are reserved at the hub before the sale queues, and given back if
//! the sale is not recorded. Without the hub such an item waits for it: the chain's
//! count is the hub's alone. A store with no hub applies the stock to itself.

use patron_protocol::hub::{StockItem, StockRelease, StockRequest};

use super::hub_port::HubCallError;
use super::{Edge, EdgeError};
use crate::domain::catalogue::Part;
use crate::domain::promo::ruleset::Compiled;

impl Edge {
    /// Reserves at the hub the units of `part`'s items that have a chain-wide stock,
    /// for sale `txn`. Whether anything was reserved (to give back if the sale is not
    /// recorded). Refused: `OutOfStock` with what is left; no answer: `HubUnreachable`.
    pub(super) async fn reserve_chain_stock(
        &self,
        rules: Option<&Compiled>,
        part: &Part,
        txn: [u8; 16],
    ) -> Result<bool, EdgeError> {
        let items: Vec<StockItem> = part
            .units
            .iter()
            .filter_map(|(sku, units)| {
                let stock = rules?.set.catalogue_item(sku)?.stock_chain?;
                Some(StockItem {
                    sku: sku.clone(),
                    units: *units,
                    stock,
                })
            })
            .collect();
        if items.is_empty() {
            return Ok(false);
        }
        let Some(hub) = self.hub_authority() else {
            return Ok(false);
        };
        let unreachable = |sku: &str| {
            EdgeError::HubUnreachable(format!(
                "{sku} is counted across the chain at the hub, which cannot be reached: it waits for the hub"
            ))
        };
        if !self.sync_status.lock().is_ok_and(|s| s.reachable) {
            return Err(unreachable(&items[0].sku));
        }
        let req = StockRequest {
            txn: uuid::Uuid::from_bytes(txn).to_string(),
            items,
        };
        match tokio::time::timeout(hub.timeout, hub.client.reserve_stock(&req)).await {
            Ok(Ok(a)) if a.granted => Ok(true),
            Ok(Ok(a)) => {
                let short = req
                    .items
                    .iter()
                    .zip(&a.left)
                    .find(|(i, l)| l.left < i.units)
                    .map(|(i, l)| (i.sku.clone(), l.left, i.units));
                let (sku, left, asked) =
                    short.unwrap_or_else(|| (req.items[0].sku.clone(), 0, req.items[0].units));
                Err(EdgeError::OutOfStock { sku, left, asked })
            }
            Ok(Err(HubCallError::Refused { status, message })) => {
                tracing::warn!(status, %message, "the hub refused a stock reservation");
                Err(unreachable(&req.items[0].sku))
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "stock reservation failed");
                self.hub_failed();
                Err(unreachable(&req.items[0].sku))
            }
            Err(_) => {
                // It may have been granted: given back, or it lapses.
                self.hub_failed();
                self.release_chain_stock(txn);
                Err(unreachable(&req.items[0].sku))
            }
        }
    }

    /// Gives back the units reserved for sale `txn`, which was not recorded. Best
    /// effort, in the background: unanswered, the reservation lapses.
    pub(super) fn release_chain_stock(&self, txn: [u8; 16]) {
        let Some(hub) = self.hub_authority() else {
            return;
        };
        let req = StockRelease {
            txn: uuid::Uuid::from_bytes(txn).to_string(),
        };
        tokio::spawn(async move {
            let given = tokio::time::timeout(hub.timeout, hub.client.release_stock(&req)).await;
            if !matches!(given, Ok(Ok(_))) {
                tracing::warn!("units the hub reserved were not given back: they lapse");
            }
        });
    }
}

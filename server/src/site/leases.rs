//! Reservation leases kept in the store beside the reservations (`SITE_LEASES`): a restart of
//! the server gives each reservation the lease it had — and none to one made without a lease
//! (an operator's `outpost reserve`, a program's), which stays until released (R7).

use super::*;
use outpost_replicator::local::{SITE_LEASES, SITE_LEASES_KEPT};

/// A lease as kept.
#[derive(Serialize, Deserialize, Debug)]
struct Kept {
    holder: String,
    until_ms: u64,
    /// Its length: after a restart it runs at least this long again (the holder's renewals
    /// failed while the server was down).
    lease_ms: u64,
}

/// Just past every kept lease's key (`wr/` → `wr0`).
fn leases_end() -> Vec<u8> {
    let mut end = SITE_LEASES.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

fn lease_key(table: &str, key: &str) -> Vec<u8> {
    let mut k = SITE_LEASES.to_vec();
    k.extend_from_slice(table.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// Reserves a document for `holder` with a lease until `until_ms`, both in one transaction.
pub(super) fn reserve_leased(
    store: &Store,
    table: &str,
    key: &str,
    holder: &str,
    until_ms: u64,
    lease_ms: u64,
) -> outpost_engine::Result<()> {
    let kept = Kept {
        holder: holder.to_owned(),
        until_ms,
        lease_ms,
    };
    let bytes = serde_json::to_vec(&kept).unwrap_or_default();
    store.write(|tx| {
        tx.reserve(table, key, holder)?;
        tx.local_put(&lease_key(table, key), &bytes)
    })
}

/// Releases `holder`'s reservation of a document and forgets its lease, in one transaction.
pub(super) fn release_leased(
    store: &Store,
    table: &str,
    key: &str,
    holder: &str,
) -> outpost_engine::Result<()> {
    store.write(|tx| {
        tx.release(table, key, holder)?;
        tx.local_remove(&lease_key(table, key))
    })
}

/// The leases of the reservations the store holds when the server starts: each as kept (running
/// at least its length again); a reservation without one keeps none — unless no server that
/// keeps leases ran on the store before and `lease_existing`: then every reservation gets
/// `fallback_ms` (those of a server of before, which kept none). Leases kept for reservations
/// gone meanwhile are dropped.
pub(super) fn leases_at_start(
    store: &Store,
    now_ms: u64,
    lease_existing: bool,
    fallback_ms: u64,
) -> Result<Leases> {
    let snap = store.snapshot().map_err(|e| e.to_string())?;
    let first_run = snap
        .local_get(SITE_LEASES_KEPT)
        .map_err(|e| e.to_string())?
        .is_none();
    let held = snap.reservations().map_err(|e| e.to_string())?;
    let mut leases = Leases::new();
    let mut stale = Vec::new();
    for (k, v) in snap
        .local_range(SITE_LEASES, &leases_end(), None)
        .map_err(|e| e.to_string())?
    {
        let Some(rest) = k.strip_prefix(SITE_LEASES) else {
            continue;
        };
        let mut parts = rest.splitn(2, |b| *b == 0);
        let (Some(t), Some(key)) = (parts.next(), parts.next()) else {
            stale.push(k.clone());
            continue;
        };
        let (table, key) = (
            String::from_utf8_lossy(t).into_owned(),
            String::from_utf8_lossy(key).into_owned(),
        );
        match serde_json::from_slice::<Kept>(&v) {
            Ok(kept)
                if held
                    .iter()
                    .any(|(ht, hk, h)| *ht == table && *hk == key && *h == kept.holder) =>
            {
                let until = kept.until_ms.max(now_ms.saturating_add(kept.lease_ms));
                leases.insert((table, key), (kept.holder, until));
            }
            _ => stale.push(k.clone()),
        }
    }
    if first_run && lease_existing {
        for (table, key, holder) in held {
            leases
                .entry((table, key))
                .or_insert((holder, now_ms.saturating_add(fallback_ms)));
        }
    }
    store
        .write(|tx| {
            for k in &stale {
                tx.local_remove(k)?;
            }
            tx.local_put(SITE_LEASES_KEPT, &[1])
        })
        .map_err(|e| e.to_string())?;
    Ok(leases)
}

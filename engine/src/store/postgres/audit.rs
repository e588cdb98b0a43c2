//! The audit trail: per-tenant hash chains, extended under the tenant's lock.

use postgres::{GenericClient, Transaction};

use super::BATCH;
use super::db::{Conn, Db, get};
use crate::store::common::{AuditChain, ChainCheck, NewAudit, parse_audit_detail};
use crate::store::{AuditRecord, StoreError};
use crate::util::now_rfc3339;

/// The seq and hash the tenant's chain continues from: its last record, or
/// the checkpoint pruning left. The caller holds the tenant's lock.
pub(super) fn head(tx: &mut Db<'_, Transaction<'_>>, tenant: &str) -> Result<Option<(i64, String)>, StoreError> {
    let row = tx.query_opt(
        "reading the audit chain",
        "SELECT seq, hash FROM (
             (SELECT 0 AS pick, seq, hash FROM audit WHERE tenant = $1 ORDER BY seq DESC LIMIT 1)
             UNION ALL
             SELECT 1, seq, hash FROM audit_checkpoints WHERE tenant = $1
         ) h ORDER BY pick LIMIT 1",
        &[&tenant],
    )?;
    row.map(|r| Ok((get(&r, 0, "reading the audit chain")?, get(&r, 1, "reading the audit chain")?))).transpose()
}

/// Writes records of one tenant, kind and actor, in chain order (which
/// `position` then keeps).
pub(super) fn insert(
    tx: &mut Db<'_, Transaction<'_>>,
    tenant: &str,
    kind: &str,
    actor: &str,
    records: &[NewAudit],
) -> Result<(), StoreError> {
    for chunk in records.chunks(BATCH) {
        let seqs: Vec<i64> = chunk.iter().map(|a| a.seq).collect();
        let ats: Vec<&str> = chunk.iter().map(|a| a.at.as_str()).collect();
        let details: Vec<&str> = chunk.iter().map(|a| a.detail.as_str()).collect();
        let prevs: Vec<&str> = chunk.iter().map(|a| a.prev_hash.as_str()).collect();
        let hashes: Vec<&str> = chunk.iter().map(|a| a.hash.as_str()).collect();
        tx.execute(
            "appending to the audit trail",
            "INSERT INTO audit (tenant, seq, at, kind, actor, detail, prev_hash, hash)
             SELECT $1, a.seq, a.at, $2, $3, a.detail, a.prev_hash, a.hash
               FROM UNNEST($4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[])
                    AS a(seq, at, detail, prev_hash, hash)
              ORDER BY a.seq",
            &[&tenant, &kind, &actor, &seqs, &ats, &details, &prevs, &hashes],
        )?;
    }
    Ok(())
}

/// Appends one record, inside the caller's transaction.
pub(super) fn append(
    tx: &mut Db<'_, Transaction<'_>>,
    tenant: &str,
    kind: &str,
    actor: &str,
    detail: &serde_json::Value,
) -> Result<(), StoreError> {
    tx.lock_tenant(tenant)?;
    let record = AuditChain::after(tenant, head(tx, tenant)?).next(kind, actor, detail);
    insert(tx, tenant, kind, actor, &[record])
}

const AUDIT_COLUMNS: &str = "seq, tenant, at, kind, actor, detail, prev_hash, hash";

/// A record, and its detail exactly as stored.
fn audit_row(r: &postgres::Row) -> Result<(AuditRecord, String), StoreError> {
    let c = "reading audit record";
    let detail: String = get(r, 5, c)?;
    let record = AuditRecord {
        seq: get(r, 0, c)?,
        tenant: get(r, 1, c)?,
        at: get(r, 2, c)?,
        kind: get(r, 3, c)?,
        actor: get(r, 4, c)?,
        detail: parse_audit_detail(detail.clone()),
        prev_hash: get(r, 6, c)?,
        hash: get(r, 7, c)?,
    };
    Ok((record, detail))
}

pub(super) fn records<C: GenericClient>(
    db: &mut Db<'_, C>,
    tenant: Option<&str>,
    since: Option<&str>,
) -> Result<Vec<AuditRecord>, StoreError> {
    let sql = format!(
        "SELECT {AUDIT_COLUMNS} FROM audit
          WHERE ($1::text IS NULL OR tenant = $1::text) AND ($2::text IS NULL OR at >= $2::text)
          ORDER BY tenant, seq"
    );
    let rows = db.query("reading audit", &sql, &[&tenant, &since])?;
    rows.iter().map(|r| audit_row(r).map(|(record, _)| record)).collect()
}

/// Recomputes every tenant's chain from one snapshot (appends and prunes
/// by other processes go on meanwhile). The inner `Err` names the first bad record.
pub(super) fn verify(conn: &mut Conn) -> Result<Result<u64, String>, StoreError> {
    conn.snapshot("verifying the audit trail", |tx| {
        let rows = tx.query(
            "verifying the audit trail",
            "SELECT tenant FROM audit UNION SELECT tenant FROM audit_checkpoints ORDER BY 1",
            &[],
        )?;
        let tenants =
            rows.iter().map(|r| get(r, 0, "verifying the audit trail")).collect::<Result<Vec<String>, _>>()?;
        let mut n = 0u64;
        for tenant in &tenants {
            let checkpoint = tx
                .query_opt(
                    "reading the audit checkpoint",
                    "SELECT seq, hash FROM audit_checkpoints WHERE tenant = $1",
                    &[tenant],
                )?
                .map(|r| {
                    Ok::<_, StoreError>((
                        get(&r, 0, "reading the audit checkpoint")?,
                        get(&r, 1, "reading the audit checkpoint")?,
                    ))
                })
                .transpose()?;
            let mut chain = ChainCheck::new(tenant, checkpoint);
            let mut broken = None;
            let walked = tx.for_each_row(
                "verifying the audit trail",
                &format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE tenant = $1 ORDER BY position"),
                &[tenant],
                |r| {
                    let (record, raw_detail) = audit_row(r)?;
                    chain.check(record, &raw_detail).map_err(|e| {
                        broken = Some(e);
                        // Stops the walk; `broken` says why.
                        StoreError::Corrupt(String::new())
                    })?;
                    n += 1;
                    Ok(())
                },
            );
            if let Some(message) = broken {
                return Ok(Err(message));
            }
            walked?;
        }
        Ok(Ok(n))
    })
}

/// Drops the tenant's records older than `before`, moving its checkpoint to
/// the last one dropped so the rest still verifies.
pub(super) fn prune(tx: &mut Db<'_, Transaction<'_>>, tenant: &str, before: &str) -> Result<u64, StoreError> {
    // An append meanwhile would chain onto a record this removes.
    tx.lock_tenant(tenant)?;
    let last = tx.query_opt(
        "reading the audit chain",
        "SELECT seq, hash FROM audit WHERE tenant = $1 AND at < $2 ORDER BY seq DESC LIMIT 1",
        &[&tenant, &before],
    )?;
    let Some(last) = last else { return Ok(0) };
    let (seq, hash): (i64, String) =
        (get(&last, 0, "reading the audit chain")?, get(&last, 1, "reading the audit chain")?);
    let n =
        tx.execute("pruning the audit trail", "DELETE FROM audit WHERE tenant = $1 AND seq <= $2", &[&tenant, &seq])?;
    tx.execute(
        "moving the audit checkpoint",
        "INSERT INTO audit_checkpoints (tenant, seq, hash, pruned_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, pruned_at = excluded.pruned_at",
        &[&tenant, &seq, &hash, &now_rfc3339()],
    )?;
    Ok(n)
}

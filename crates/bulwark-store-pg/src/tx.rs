//! One authenticated write transaction ([`StoreTx`]) on PostgreSQL.
//!
//! It runs after [`crate::lock_header`] took the header row's lock, so it is the only writer:
//! the header it read stays current (it is updated here as the transaction changes it), and
//! the informational object count is kept in the header row by the same statements that add
//! or remove objects (no triggers).

use bulwark_core::store::{KeyslotRow, ObjectRow, RecordRow, StoreHeader, StoreTx};
use bulwark_core::Result;

use crate::conn::Stmts;
use crate::{
    db_err, i64_of, query_keyslot, query_object, query_record, query_records, row_to_object, u64_of,
};

pub(crate) struct PgTx<'a, 'b> {
    pub(crate) tx: &'a mut postgres::Transaction<'b>,
    pub(crate) st: &'a mut Stmts,
    pub(crate) header: StoreHeader,
}

impl PgTx<'_, '_> {
    fn exec(
        &mut self,
        sql: &'static str,
        args: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<u64> {
        let s = self.st.get(self.tx, sql)?;
        self.tx.execute(&s, args).map_err(|e| db_err(&e))
    }
}

impl StoreTx for PgTx<'_, '_> {
    fn header(&mut self) -> Result<StoreHeader> {
        Ok(self.header.clone())
    }

    fn set_state(&mut self, generation: u64, state: &[u8]) -> Result<()> {
        self.exec(
            "UPDATE header SET generation = $1, state = $2 WHERE id = 1",
            &[&i64_of(generation)?, &state],
        )?;
        self.header.generation = generation;
        self.header.state = state.to_vec();
        Ok(())
    }

    fn keyslot(&mut self, user_type: u8) -> Result<Option<KeyslotRow>> {
        query_keyslot(self.tx, self.st, user_type)
    }

    fn put_keyslot(&mut self, row: &KeyslotRow) -> Result<()> {
        self.exec(
            "INSERT INTO keyslots (user_type, salt, m_cost, t_cost, p_cost, wrapped_mk, mac)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (user_type) DO UPDATE SET salt = EXCLUDED.salt,
                m_cost = EXCLUDED.m_cost, t_cost = EXCLUDED.t_cost, p_cost = EXCLUDED.p_cost,
                wrapped_mk = EXCLUDED.wrapped_mk, mac = EXCLUDED.mac",
            &[
                &i16::from(row.user_type),
                &row.salt,
                &i64::from(row.m_cost),
                &i64::from(row.t_cost),
                &i64::from(row.p_cost),
                &row.wrapped_mk,
                &row.mac,
            ],
        )?;
        Ok(())
    }

    fn object(&mut self, handle: u64) -> Result<Option<ObjectRow>> {
        query_object(self.tx, self.st, handle)
    }

    fn insert_object(&mut self, row: &ObjectRow) -> Result<u64> {
        let s = self.st.get(
            self.tx,
            "INSERT INTO objects (uid, class, label, ckaid, private, attrs, secret, mac)
             VALUES ($1, $2, $3, $4, $5, $6, $7, ''::bytea) RETURNING handle",
        )?;
        let r = self
            .tx
            .query_one(
                &s,
                &[
                    &row.uid.as_slice(),
                    &i64_of(row.class)?,
                    &row.label,
                    &row.ckaid,
                    &row.private,
                    &row.attrs,
                    &row.secret,
                ],
            )
            .map_err(|e| db_err(&e))?;
        let handle: i64 = r.try_get(0).map_err(|e| db_err(&e))?;
        self.exec("UPDATE header SET object_count = object_count + 1 WHERE id = 1", &[])?;
        Ok(u64_of(handle))
    }

    fn set_object_mac(&mut self, handle: u64, mac: &[u8]) -> Result<()> {
        self.exec("UPDATE objects SET mac = $1 WHERE handle = $2", &[&mac, &i64_of(handle)?])?;
        Ok(())
    }

    fn update_object(&mut self, row: &ObjectRow) -> Result<bool> {
        let n = self.exec(
            "UPDATE objects SET class = $1, label = $2, ckaid = $3, private = $4, attrs = $5,
             secret = $6, mac = $7 WHERE handle = $8 AND uid = $9",
            &[
                &i64_of(row.class)?,
                &row.label,
                &row.ckaid,
                &row.private,
                &row.attrs,
                &row.secret,
                &row.mac,
                &i64_of(row.handle)?,
                &row.uid.as_slice(),
            ],
        )?;
        Ok(n == 1)
    }

    fn delete_object(&mut self, handle: u64) -> Result<Option<ObjectRow>> {
        let s = self.st.get(
            self.tx,
            "DELETE FROM objects WHERE handle = $1
             RETURNING handle, uid, class, label, ckaid, private, attrs, secret, mac",
        )?;
        let r = self.tx.query_opt(&s, &[&i64_of(handle)?]).map_err(|e| db_err(&e))?;
        let Some(r) = r else { return Ok(None) };
        self.exec("UPDATE header SET object_count = object_count - 1 WHERE id = 1", &[])?;
        row_to_object(&r).map(Some)
    }

    fn record(&mut self, kind: &str, key: &[u8]) -> Result<Option<RecordRow>> {
        query_record(self.tx, self.st, kind, key)
    }

    fn records(&mut self, kind: &str, prefix: &[u8]) -> Result<Vec<RecordRow>> {
        query_records(self.tx, self.st, kind, prefix)
    }

    fn put_record(&mut self, row: &RecordRow) -> Result<()> {
        self.exec(
            "INSERT INTO records (kind, key, value, mac) VALUES ($1, $2, $3, $4)
             ON CONFLICT (kind, key) DO UPDATE SET value = EXCLUDED.value, mac = EXCLUDED.mac",
            &[&row.kind, &row.key, &row.value, &row.mac],
        )?;
        Ok(())
    }

    fn delete_record(&mut self, kind: &str, key: &[u8]) -> Result<Option<RecordRow>> {
        let s = self.st.get(
            self.tx,
            "DELETE FROM records WHERE kind = $1 AND key = $2 RETURNING kind, key, value, mac",
        )?;
        let r = self.tx.query_opt(&s, &[&kind, &key]).map_err(|e| db_err(&e))?;
        r.as_ref().map(crate::row_to_record).transpose()
    }
}

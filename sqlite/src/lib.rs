//! SQLite upkeep shared by the edge and the hub.
//!
//! Both answer a caller only after a commit is durable (WAL, `synchronous=FULL`), so
//! anything else a commit does is on that caller's clock. SQLite's automatic checkpoint
//! runs inside the commit that crosses its threshold, copying up to a thousand pages
//! into the database and syncing it before the commit returns: every request waiting
//! on that commit pays for it. [`wal`] moves that work to a thread of its own and keeps
//! the WAL bounded with short restarts between commits. [`migrate`] is the one schema
//! migration runner (newer-database guard, backup, one transaction); [`connect`] opens
//! a connection with the durable settings both use.

pub mod connect;
pub mod migrate;
pub mod wal;

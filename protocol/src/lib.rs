//! Wire types shared by every Patron component.
//!
//! - [`money`]: integer minor units (fen) and integer points, never floats.
//! - [`ids`]: identifiers of members, transactions and fact origins.
//! - [`error`]: the POS API error codes and their HTTP statuses, in one table.
//! - [`pos`]: the request and response bodies of POS API v1 (`shared/POS-API.md`).
//! - [`service`]: member-service operations (ledger, adjustments, transfers).
//! - [`hub`]: enrollment, store status, redemption authority and HQ documents.
//!
//! This crate does no I/O and depends on serde only (plus utoipa behind the
//! `openapi` feature), so that the edge, the hub and the sync core agree on one
//! definition of every message.

pub mod error;
pub mod hub;
pub mod ids;
pub mod money;
pub mod pos;
pub mod raw_json;
pub mod service;

pub use error::{ApiError, ErrorBody, ErrorCode};
pub use ids::{MemberId, Origin, TransactionId};
pub use money::{Fen, Points};

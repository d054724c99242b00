//! One integration binary for every multi-process test (one link step, one harness).
//! Each module covers one feature against real `patron-edge` processes.

mod auth;
mod bad_input;
mod catalogue;
mod checkout;
mod claims;
mod durability;
mod faults;
mod lan_tls;
mod limits;
mod lookups;
mod member_service;
mod members;
mod openapi;
mod pii;
mod promotions;
mod redemption;
mod replication;
mod security;
mod sync;

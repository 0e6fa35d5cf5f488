//! Warren: isolated per-tenant files and shells for AI agents, speaking the TroveFiles wire
//! protocol. See ARCHITECTURE.md for the map.
//!
//! Layers, top to bottom: `http` (routes, JSON, status codes) → `services` (behaviour, scopes,
//! ordering of effects) → `db` (metadata) and the `warren-storage` crate (bytes).

pub mod config;
pub mod coord;
pub mod db;
pub mod envelope;
pub mod event;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod server;
pub mod services;

//! The messages of imgfs's control socket (`imgfs status|update|rollback|pin|unpin|prefetch`).

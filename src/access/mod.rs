//! Private previews (contract section 1.6): who may open a session's preview. The editing app
//! signs short-lived link tokens ([`token`]) that the router checks with public keys only; a
//! valid one is exchanged for a grant cookie the router signs itself ([`grant`]); [`gate`] is the
//! decision both engines call for every request of a known session, and the rule by which
//! revocation closes open WebSockets. [`link`] reads what a request presents.

pub mod gate;
pub mod grant;
pub mod link;
pub mod mint;
pub mod token;

pub use gate::{AccessResult, Admitted, Gate, Presented, Verdict};
pub use grant::{Grant, GrantError, Grants};
pub use token::{Claims, KeysError, TokenError, Verifier};

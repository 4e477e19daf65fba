//! Private previews (contract section 1.6): who may open a session's preview. The editing app
//! signs short-lived tokens; the router holds only public keys. This module is built up in
//! steps; so far it verifies link tokens ([`token`]) and signs and checks the grant cookies they
//! are exchanged for ([`grant`]). The request decision both engines call, and revocation, come
//! next.

pub mod grant;
pub mod mint;
pub mod token;

pub use grant::{Grant, GrantError, Grants};
pub use token::{Claims, KeysError, TokenError, Verifier};

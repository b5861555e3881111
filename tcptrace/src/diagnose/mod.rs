//! `tcptrace diagnose`: watch for a while, then name the cause and the fix.

pub mod facts;
pub mod finding;
pub mod rules;

//! The quirk switches.

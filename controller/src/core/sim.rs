//! Seeded simulation of the core (see the tests).

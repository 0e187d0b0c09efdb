//! The vole controller: the process that binds the listening socket, starts
//! node processes, hands them the socket over SCM_RIGHTS, balances accepts
//! between them over control links, and restarts them when they die.
//!
//! Not built yet: `vole serve` runs one process (see `vole-node`).

#![warn(missing_docs)]

//! Runnable examples of the Vigil SDK; see `src/bin/`.

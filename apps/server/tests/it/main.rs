//! Integration tests of the server over real sockets.

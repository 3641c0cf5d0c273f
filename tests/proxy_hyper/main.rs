//! The routing proxy's behaviour tests (`tests/proxy/suite.rs`) with hyper serving every HTTP/1
//! connection (`http1 = "hyper"`), so that both HTTP/1 paths keep the same promises.

/// The HTTP/1 path this target's proxies use.
const HTTP1: ficus_proxy::Http1Path = ficus_proxy::Http1Path::Hyper;

include!("../proxy/suite.rs");

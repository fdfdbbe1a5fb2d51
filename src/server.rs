pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    std::net::TcpListener::bind(addr)
}
pub async fn serve(
    _l: std::net::TcpListener,
    _s: std::sync::Arc<crate::state::Shared>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    shutdown.await
}

pub fn watch(
    _p: &std::path::Path,
    _d: std::time::Duration,
) -> std::io::Result<tokio::sync::mpsc::UnboundedReceiver<()>> {
    Ok(tokio::sync::mpsc::unbounded_channel().1)
}

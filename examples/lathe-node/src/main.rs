//! The `lathe-node` binary: a node that can run the seed's example tasks — `http_loadbalancer`
//! 0.8.2 and `http_frontpage` at both 4.2.1 and 4.2.2 (see `examples/`).

fn main() {
    let catalog = lathe::Catalog::new()
        .with(http_loadbalancer::tasks())
        .with(http_frontpage_4_2_1::tasks())
        .with(http_frontpage_4_2_2::tasks());
    lathe_node::main_with(catalog)
}

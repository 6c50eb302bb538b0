//! A real 3-node Garage cluster for the benchmarks (bench/scale.sh): starts it under a folder, writes the `[storage]` section of an imaged.toml that uses its bucket, prints `ready`, and stops the nodes when its standard input closes (the section is last: lines appended to the file belong to it).

use std::io::Read;
use std::path::PathBuf;

use clap::Parser;
use tests::garage::Garage;

#[derive(Parser)]
struct Args {
    /// Where the nodes keep their configs, metadata, data and logs.
    #[arg(long)]
    dir: PathBuf,
    /// The bucket to create.
    #[arg(long, default_value = "imaged")]
    bucket: String,
    /// The imaged.toml to write, with `[storage]` naming the bucket.
    #[arg(long)]
    config: PathBuf,
}

fn main() {
    let args = Args::parse();
    let g = Garage::start(&args.dir, &args.bucket);
    let storage = format!(
        "[storage]\nendpoint = \"{}\"\nbucket = \"{}\"\nregion = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
        g.s3_url, g.bucket, g.region, g.key_id, g.secret
    );
    std::fs::write(&args.config, storage).expect("writing the config");
    println!("ready");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(g);
}

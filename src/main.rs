fn main() {
    let args: Vec<String> = std::env::args().collect();
    match andon::policy::load(&args[1]) {
        Ok(p) => println!("{:#?}", p.tiers[0]),
        Err(e) => println!("{e}"),
    }
}

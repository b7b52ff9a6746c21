fn main() {
    println!("{}", memcg_drift::probes::OBJECT.len());
}

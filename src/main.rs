fn main() {
    println!("ffebm");
}

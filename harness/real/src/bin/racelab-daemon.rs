//! The observer daemon of `daemon-spawn` as a real process: started (`Popen`) when a hook spawns
//! it, it runs its actor's steps (its singleton `flock`, its PID write, its exit) one request at a
//! time on standard input and output, as `racelab-real`'s workers do.

fn main() {
    racelab_real::serve_stdio()
}

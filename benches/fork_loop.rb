# Forks COUNT children that do nothing and exit, one after the other, and prints how long the
# loop took and the CPU time it cost (this process and its children): what a fork costs the
# program, with and without leakhunt's agent (benches/servers.rs).
#   ruby fork_loop.rb [COUNT=300]
count = Integer(ARGV[0] || 300)
cpu = -> { Process.times.then { |t| t.utime + t.stime + t.cutime + t.cstime } }
started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
cpu_before = cpu.call
count.times do
  pid = fork {}
  Process.wait(pid)
end
elapsed = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
puts "forked #{count} in #{elapsed.round(4)} seconds, cpu #{(cpu.call - cpu_before).round(4)} seconds"

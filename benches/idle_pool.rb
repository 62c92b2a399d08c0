# A pool of WORKERS idle workers, each holding OBJECTS objects of its own (so each snapshot
# has a heap to dump), forked by a master that waits for them: what benches/servers.rs asks
# rounds of. SIGTERM or SIGINT ends it.
#   ruby idle_pool.rb [WORKERS=2] [OBJECTS=200000]
workers = Integer(ARGV[0] || 2)
objects = Integer(ARGV[1] || 200_000)
pids = Array.new(workers) do
  fork do
    kept = Array.new(objects) { |i| "object #{i}" }
    stop = false
    %w[TERM INT].each { |s| Signal.trap(s) { stop = true } }
    sleep 0.05 until stop
    kept.size
  end
end
%w[TERM INT].each { |s| Signal.trap(s) { pids.each { |p| Process.kill(:TERM, p) rescue nil } } }
pids.each { |p| Process.wait(p) rescue nil }

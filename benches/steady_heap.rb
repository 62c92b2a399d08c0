# A program with a steady heap of about OBJECTS live objects (default 1.5 M, a mid-sized Rails
# worker's), for benches/bundle_size.sh: it builds the heap, then stays alive for SECONDS with
# light churn (requests come and go, nothing is kept), so that leakhunt's rounds see the same heap.
#
#   ruby benches/steady_heap.rb [OBJECTS] [SECONDS]
objects = Integer(ARGV[0] || 1_500_000)
seconds = Float(ARGV[1] || 20)

class Account
  def initialize(id, email, plan)
    @id = id
    @email = email
    @plan = plan
    @tags = [plan, "region-#{id % 17}"]
  end
end

Row = Struct.new(:key, :value, :updated_at)

# About ten objects per unit: an Account (OBJECT, two Strings, an Array), a Hash with a String,
# a Struct with a String and a Float, a frozen symbol-keyed Hash and an Array of Integers.
KEPT = []
(objects / 10).times do |i|
  KEPT << Account.new(i, "user#{i}@example.#{%w[com org net][i % 3]}", %w[free pro team][i % 3])
  KEPT << { "id" => i, "name" => "item #{i * 7919 % 100_003}", "score" => i % 101 }
  KEPT << Row.new("k#{i.to_s(36)}", (i * 0.37).round(2), Time.at(1_700_000_000 + i).to_f)
  KEPT << [i, i + 1, i * 3]
end
$stdout.puts "built #{KEPT.size} roots, #{ObjectSpace.count_objects[:TOTAL] - ObjectSpace.count_objects[:FREE]} live slots"
$stdout.flush

# The program's own view of leakhunt's rounds: a thread that wakes every 10 ms records the
# longest time between two of its wake-ups (a round parks every thread while it works).
gaps = []
heartbeat = Thread.new do
  last = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  loop do
    sleep 0.01
    now = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    gaps << now - last if now - last > 0.1
    last = now
  end
end

deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + seconds
served = 0
while Process.clock_gettime(Process::CLOCK_MONOTONIC) < deadline
  request = { path: "/accounts/#{served % 1000}", body: "x" * 200 }
  served += 1 if request[:path].size > 0
  sleep 0.002
end
$stdout.puts "served #{served} requests"
heartbeat.kill
$stdout.puts format('heartbeat: longest gap %.2f s; gaps over 0.1 s: %s', gaps.max || 0,
                    gaps.map { |g| format('%.2f', g) }.join(' ').then { |t| t.empty? ? 'none' : t })

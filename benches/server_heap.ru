# A Rack app for benches/server_latency.sh: at boot it builds a steady heap of about OBJECTS live
# objects (env OBJECTS, default 1.5 M; the shape of benches/steady_heap.rb's, copied), then
# answers every request with a small body made fresh (light churn, nothing is kept).
#
#   OBJECTS=1500000 puma -w 0 -e production -b unix:///tmp/x.sock benches/server_heap.ru
objects = Integer(ENV.fetch("OBJECTS", "1500000"))

class Account
  def initialize(id, email, plan)
    @id = id
    @email = email
    @plan = plan
    @tags = [plan, "region-#{id % 17}"]
  end
end

Row = Struct.new(:key, :value, :updated_at)

# About ten objects per unit, as in steady_heap.rb.
KEPT = []
(objects / 10).times do |i|
  KEPT << Account.new(i, "user#{i}@example.#{%w[com org net][i % 3]}", %w[free pro team][i % 3])
  KEPT << { "id" => i, "name" => "item #{i * 7919 % 100_003}", "score" => i % 101 }
  KEPT << Row.new("k#{i.to_s(36)}", (i * 0.37).round(2), Time.at(1_700_000_000 + i).to_f)
  KEPT << [i, i + 1, i * 3]
end
$stdout.puts "built #{KEPT.size} roots, #{ObjectSpace.count_objects[:TOTAL] - ObjectSpace.count_objects[:FREE]} live slots"
$stdout.flush

run lambda { |env|
  request = { path: env["PATH_INFO"], body: "x" * 200 }
  [200, { "content-type" => "text/plain" }, ["#{request[:path]} #{KEPT.size}\n"]]
}

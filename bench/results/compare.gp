# gnuplot compare.gp (in this directory) draws compare.png
set terminal pngcairo size 1100,1300 font 'DejaVu Sans,11'
set output 'compare.png'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y
set grid ytics mytics
set key top left horizontal samplen 2
set linetype 1 lc rgb '#1f6fb4'
set linetype 2 lc rgb '#9cc3e6'
set linetype 3 lc rgb '#5a9e4b'
set linetype 4 lc rgb '#d2462f'
set linetype 5 lc rgb '#b0b0b0'
set multiplot layout 3,1 title 'Annals vs PostgreSQL 15, Redis 7, NATS JetStream (median of 3 runs, log scales)' font ',13'
set title 'events/s (higher is better)'
set format y '%.0s%c'
set yrange [100:*]
plot 'compare-eps.dat' using 2:xtic(1) title columnheader(2) lt 1, 'compare-eps.dat' using 3 title columnheader(3) lt 2, 'compare-eps.dat' using 4 title columnheader(4) lt 3, 'compare-eps.dat' using 5 title columnheader(5) lt 4, 'compare-eps.dat' using 6 title columnheader(6) lt 5
set format y '%g'
set yrange [0.05:*]
set title 'latency p50, ms (lower is better)'
plot 'compare-p50.dat' using 2:xtic(1) title columnheader(2) lt 1, 'compare-p50.dat' using 3 title columnheader(3) lt 2, 'compare-p50.dat' using 4 title columnheader(4) lt 3, 'compare-p50.dat' using 5 title columnheader(5) lt 4, 'compare-p50.dat' using 6 title columnheader(6) lt 5
set title 'latency p99, ms (lower is better)'
plot 'compare-p99.dat' using 2:xtic(1) title columnheader(2) lt 1, 'compare-p99.dat' using 3 title columnheader(3) lt 2, 'compare-p99.dat' using 4 title columnheader(4) lt 3, 'compare-p99.dat' using 5 title columnheader(5) lt 4, 'compare-p99.dat' using 6 title columnheader(6) lt 5
unset multiplot
